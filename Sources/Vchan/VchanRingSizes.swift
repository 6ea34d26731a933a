/// Where one ring's bytes live, derived from its order.
///
/// OCaml: `Vchan.Location.t`
public enum VchanRingLocation: Sendable, Hashable {
    /// Inside the shared page at `offset`: order 10 at 1024, order 11 at 2048.
    ///
    /// OCaml: `Location.Within_shared_page`
    case inPage(offset: Int)
    /// In `pages` granted pages of its own (order 12 and up).
    ///
    /// OCaml: `Location.External`
    case external(pages: Int)

    /// The location of a ring of `1 << order` bytes, or nil outside 10...20 (what libxenvchan accepts).
    ///
    /// OCaml: `Location.of_order`
    public init?(order: Int) {
        switch order {
        case VchanLayout.smallRingOrder: self = .inPage(offset: VchanLayout.smallRingOffset)
        case VchanLayout.largeRingOrder: self = .inPage(offset: VchanLayout.largeRingOffset)
        case VchanLayout.firstExternalOrder...VchanLayout.maximumOrder:
            self = .external(pages: 1 << (order - VchanLayout.firstExternalOrder))
        default: return nil
        }
    }

    /// Granted pages of their own (0 in the page).
    public var pageCount: Int {
        if case .external(let pages) = self { return pages }
        return 0
    }
}

/// The two ring orders of a vchan: `left` (client→server) and `right` (server→client).
///
/// A server picks them from the sizes it asks for exactly as `libxenvchan_server_init` does (so a C and a
/// Swift server offer the same rings); a client takes them from the shared page and validates them as
/// libxenvchan's `init_gnt_cli` does, never trusting them again afterwards.
/// OCaml: `Vchan.Location.of_lengths` (the pair of locations)
public struct VchanRingSizes: Sendable, Hashable, CustomStringConvertible {
    /// `left_order`: the client→server ring holds `1 << leftOrder` bytes.
    public let leftOrder: Int
    /// `right_order`: the server→client ring holds `1 << rightOrder` bytes.
    public let rightOrder: Int

    /// Validates a pair of orders as a client must: each in 10...20, and not both in the same place of the
    /// shared page (both 10 or both 11 would overlap).
    ///
    /// OCaml: `Vchan.Location.of_order` on both (which accepts overlapping pairs)
    public init(leftOrder: Int, rightOrder: Int) throws(VchanError) {
        guard VchanRingLocation(order: leftOrder) != nil, VchanRingLocation(order: rightOrder) != nil,
            leftOrder != rightOrder || leftOrder >= VchanLayout.firstExternalOrder
        else { throw .invalidRingOrders(left: leftOrder, right: rightOrder) }
        self.leftOrder = leftOrder
        self.rightOrder = rightOrder
    }

    /// The orders a server gives rings of at least `readMinimum` bytes (left, which it reads) and
    /// `writeMinimum` bytes (right): the smallest power of two from 4096, except that rings fitting in the
    /// shared page (1024 and 2048 bytes, one of each, or one 2048-byte ring) stay there. Throws
    /// `.ringTooLarge` above 1 MiB, as libxenvchan refuses them.
    ///
    /// OCaml: `Vchan.Location.of_lengths` (which caps at 1 MiB instead); C: `libxenvchan_server_init`
    public static func server(readMinimum: Int, writeMinimum: Int) throws(VchanError) -> VchanRingSizes {
        for wanted in [readMinimum, writeMinimum] where wanted < 0 || wanted > VchanLayout.maximumRingSize {
            throw .ringTooLarge(requested: wanted, maximum: VchanLayout.maximumRingSize)
        }
        let small = 1 << VchanLayout.smallRingOrder
        let large = 1 << VchanLayout.largeRingOrder
        var left = minimumOrder(readMinimum)
        var right = minimumOrder(writeMinimum)
        if readMinimum <= small && writeMinimum <= large {
            (left, right) = (VchanLayout.smallRingOrder, VchanLayout.largeRingOrder)
        } else if readMinimum <= large && writeMinimum <= small {
            (left, right) = (VchanLayout.largeRingOrder, VchanLayout.smallRingOrder)
        } else if readMinimum <= large {
            left = VchanLayout.largeRingOrder
        } else if writeMinimum <= large {
            right = VchanLayout.largeRingOrder
        }
        return try VchanRingSizes(leftOrder: left, rightOrder: right)
    }

    /// libxenvchan's `min_order`: the smallest order from 12 whose ring holds `size` bytes.
    private static func minimumOrder(_ size: Int) -> Int {
        var order = VchanLayout.firstExternalOrder
        while size > 1 << order { order += 1 }
        return order
    }

    /// Where the left ring lives.
    public var left: VchanRingLocation { VchanRingLocation(order: leftOrder)! }
    /// Where the right ring lives.
    public var right: VchanRingLocation { VchanRingLocation(order: rightOrder)! }
    /// Bytes in the left ring.
    public var leftSize: Int { 1 << leftOrder }
    /// Bytes in the right ring.
    public var rightSize: Int { 1 << rightOrder }
    /// Grant references listed in the shared page: the left ring's pages, then the right ring's.
    public var grantCount: Int { left.pageCount + right.pageCount }

    /// The ring a side reads: left for the server, right for the client.
    ///
    /// OCaml: `Vchan.Endpoint.rd_ring_size`
    public func readSize(for role: VchanRole) -> Int { role == .server ? leftSize : rightSize }
    /// The ring a side writes.
    ///
    /// OCaml: `Vchan.Endpoint.wr_ring_size`
    public func writeSize(for role: VchanRole) -> Int { role == .server ? rightSize : leftSize }

    /// "left 2^10 (in page) / right 2^20 (256 pages)".
    public var description: String {
        func text(_ order: Int, _ location: VchanRingLocation) -> String {
            switch location {
            case .inPage(let offset): "2^\(order) (in page at \(offset))"
            case .external(let pages): "2^\(order) (\(pages) page\(pages == 1 ? "" : "s"))"
            }
        }
        return "left \(text(leftOrder, left)) / right \(text(rightOrder, right))"
    }
}
