// Streaming decoder for transmission requests (what a server reads): headers and WRITE payloads, fed
// straight from socket buffers. Payload bytes are handed out as slices of the input, so the server copies
// them once, into the pages it writes to the device.

/// A step of the request stream.
///
/// OCaml: `Nbd.Protocol.Request.unmarshal` (+ the payload ocaml-nbd's server reads itself)
public enum NBDRequestEvent: Equatable {
    /// A request header. When ``NBDRequestHeader/payloadLength(extended:)`` is non-zero, that many bytes of
    /// payload follow as `payload` events (or are read by the caller, see ``NBDRequestDecoder/skipPayload(_:)``).
    case request(NBDRequestHeader)
    /// Payload bytes of the last request, in order; valid only until the next call.
    case payload(UnsafeRawBufferPointer)

    /// Equality by content.
    public static func == (lhs: NBDRequestEvent, rhs: NBDRequestEvent) -> Bool {
        switch (lhs, rhs) {
        case (.request(let a), .request(let b)): a == b
        case (.payload(let a), .payload(let b)): Array(a) == Array(b)
        default: false
        }
    }
}

/// Incremental request decoder. It buffers only the 28- or 32-byte header; payloads pass through.
///
/// OCaml: `Nbd.Server.next` (which reads one header with a blocking channel read)
public struct NBDRequestDecoder: Sendable {
    /// True once `OPT_EXTENDED_HEADERS` was negotiated (only extended requests are then valid).
    public let extendedHeaders: Bool
    /// Largest payload accepted; a larger one ends the connection (the spec's "SHOULD initiate a hard
    /// disconnect": reading and dropping gigabytes would only feed a hostile client).
    public let maxPayload: UInt64

    private var header: [UInt8] = []
    private var payloadRemaining: UInt64 = 0

    /// A decoder for a session with or without extended headers.
    public init(extendedHeaders: Bool, maxPayload: UInt64 = 32 << 20) {
        self.extendedHeaders = extendedHeaders
        self.maxPayload = maxPayload
        header.reserveCapacity(NBDRequest.extendedSize)
    }

    /// Bytes of the current request's payload still to come (0 between requests).
    public var pendingPayload: UInt64 { payloadRemaining }

    /// True between requests with nothing partial buffered.
    public var isIdle: Bool { header.isEmpty && payloadRemaining == 0 }

    /// Accounts for `count` payload bytes the caller read itself, straight into its pages (clamped to
    /// ``pendingPayload``).
    ///
    /// OCaml: none
    public mutating func skipPayload(_ count: UInt64) {
        payloadRemaining -= min(count, payloadRemaining)
    }

    /// Consumes bytes from the front of `input` and returns the next event, or nil when `input` ran out.
    /// After a throw the connection must be dropped.
    ///
    /// OCaml: `Nbd.Protocol.Request.unmarshal`
    public mutating func next(_ input: inout UnsafeRawBufferPointer) throws(NBDProtocolError) -> NBDRequestEvent? {
        if payloadRemaining > 0 {
            guard !input.isEmpty else { return nil }
            let take = Int(min(payloadRemaining, UInt64(input.count)))
            let slice = UnsafeRawBufferPointer(rebasing: input[0..<take])
            input = UnsafeRawBufferPointer(rebasing: input[take...])
            payloadRemaining -= UInt64(take)
            return .payload(slice)
        }
        let size = extendedHeaders ? NBDRequest.extendedSize : NBDRequest.compactSize
        let decoded: NBDRequestHeader
        if header.isEmpty, input.count >= size {
            // The common case: the whole header is in the input, no copy.
            decoded = try NBDRequestHeader.decode(input, extended: extendedHeaders)
            input = UnsafeRawBufferPointer(rebasing: input[size...])
        } else {
            let take = min(size - header.count, input.count)
            header.append(contentsOf: input[0..<take])
            input = UnsafeRawBufferPointer(rebasing: input[take...])
            // Check the magic as soon as it is here: a hostile stream is refused before it is buffered.
            if header.count >= 4, header.count - take < 4 {
                let magic =
                    UInt32(header[0]) << 24 | UInt32(header[1]) << 16 | UInt32(header[2]) << 8 | UInt32(header[3])
                guard magic == (extendedHeaders ? NBDMagic.extendedRequest : NBDMagic.request) else {
                    throw .badMagic(what: "request", got: UInt64(magic))
                }
            }
            guard header.count == size else { return nil }
            decoded = try NBDRequestHeader.decode(header, extended: extendedHeaders)
            header.removeAll(keepingCapacity: true)
        }
        let payload = decoded.payloadLength(extended: extendedHeaders)
        guard payload <= maxPayload else {
            throw .oversize(what: "request payload", length: payload, limit: maxPayload)
        }
        payloadRemaining = payload
        return .request(decoded)
    }
}
