public import XenCore
public import XenStoreClient

/// Removes the userdata of domains that no longer exist. libxl only deletes userdata on its own destroy path,
/// so a domain that dies any other way (crash with `on_crash=destroy` handled elsewhere, a toolstack killed
/// mid-destroy, a domain destroyed by another tool) leaves files behind, and a later domain can reuse the domid.
/// The collector closes that gap: it sweeps once, then again each time xenstore fires `@releaseDomain`.
///
/// libxl: not in libxl (it ties cleanup to `libxl_domain_destroy` only); uses `libxl__userdata_destroyall`.
public struct UserdataCollector: Sendable {
    /// One domain's userdata that a sweep removed.
    ///
    /// libxl: not in libxl (reporting for the collector).
    public struct Collected: Hashable, Sendable {
        /// The dead domain's id.
        public var domid: DomainID
        /// The dead domain's handle.
        public var uuid: DomainUUID
        /// The file names removed.
        public var removed: [String]
        /// Why nothing was removed, when the domain's userdata lock could not be taken or the directory not
        /// read (say, a directory where its lock file belongs): its files stay for a later sweep, and the
        /// sweep goes on with the other domains.
        public var failure: UserdataError?

        /// A domain's sweep result.
        ///
        /// libxl: not in libxl.
        public init(domid: DomainID, uuid: DomainUUID, removed: [String], failure: UserdataError? = nil) {
            self.domid = domid
            self.uuid = uuid
            self.removed = removed
            self.failure = failure
        }
    }

    /// The store whose directory is swept (and whose domain directory says who is alive).
    public let store: UserdataStore

    /// A collector over `store`.
    ///
    /// libxl: not in libxl (see the type).
    public init(store: UserdataStore) {
        self.store = store
    }

    /// One pass: for every (domid, uuid) that has userdata files (data, leftover `n` files or a lock file), removes
    /// them when the domain is gone or its domid now belongs to another UUID. A domain the directory cannot be
    /// asked about is left alone. Blocking.
    ///
    /// libxl: `libxl__userdata_destroyall` applied to each dead domain, under its lock.
    public func sweep() throws(UserdataError) -> [Collected] {
        var owners = Set<Owner>()
        for name in try PosixFile.listDirectory(store.root) {
            guard let parsed = UserdataFileName(parsing: String(decoding: name, as: UTF8.self)) else { continue }
            owners.insert(Owner(domid: parsed.domid, uuid: parsed.uuid))
        }
        var collected: [Collected] = []
        for owner in owners.sorted(by: { $0.domid < $1.domid }) {
            let live: DomainUUID?
            do {
                live = try store.domains.uuid(of: owner.domid)
            } catch {
                continue  // "unknown" is not "dead": keep the data
            }
            if live != owner.uuid { collected.append(collect(owner)) }
        }
        return collected
    }

    /// Sweeps now, then after every element of `releases` (each `@releaseDomain` watch event), until the
    /// sequence ends or the task is cancelled. Sweeps run off the cooperative pool. `onSweep` sees each result.
    ///
    /// libxl: not in libxl (xenstored's `@releaseDomain` special watch drives it).
    public func run<Events: AsyncSequence>(
        releases: Events,
        onSweep: @Sendable ([Collected]) -> Void = { _ in }
    ) async throws where Events.Element: Sendable {
        onSweep(try await sweepOffPool())
        for try await _ in releases {
            try Task.checkCancellation()
            onSweep(try await sweepOffPool())
        }
    }

    /// Sweeps now and after every `@releaseDomain` event xenstore sends through `client`, until the task is
    /// cancelled or the connection fails (the watch is removed when this returns).
    ///
    /// libxl: not in libxl (xl's and xenopsd's `@releaseDomain` watches, applied to userdata).
    public func run(
        client: XenStoreClient,
        onSweep: @Sendable ([Collected]) -> Void = { _ in }
    ) async throws {
        let releases = try await client.watches(Self.releaseDomainPath)
        defer { releases.cancel() }
        try await run(releases: releases, onSweep: onSweep)
    }

    /// xenstored's special watch path fired whenever a domain is released (destroyed and reaped).
    ///
    /// libxl: `"@releaseDomain"` (xs_wire / `libxl__ev_evtchn` domain death watch).
    public static let releaseDomainPath = "@releaseDomain"

    /// `sweep()` on a Dispatch thread.
    ///
    /// libxl: not in libxl.
    public func sweepOffPool() async throws(UserdataError) -> [Collected] {
        let collector = self
        return try await UserdataStore.offload { () throws(UserdataError) in try collector.sweep() }
    }

    // MARK: - Helpers

    private struct Owner: Hashable {
        var domid: DomainID
        var uuid: DomainUUID
    }

    /// One dead domain's destroyAll; its failure is reported in the result, not thrown, so one domain's bad
    /// lock path never stops the others' cleanup.
    private func collect(_ owner: Owner) -> Collected {
        do throws(UserdataError) {
            let removed = try store.destroyAll(domid: owner.domid, uuid: owner.uuid)
            return Collected(domid: owner.domid, uuid: owner.uuid, removed: removed.sorted())
        } catch {
            return Collected(domid: owner.domid, uuid: owner.uuid, removed: [], failure: error)
        }
    }
}
