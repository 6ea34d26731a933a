import Dispatch
public import XenCore

/// Async forms of the store's operations. Each runs the blocking call (file IO, a possibly long `flock` wait)
/// on a Dispatch thread, never on the cooperative pool. Once started, an operation runs to completion even if
/// the task is cancelled: a half-done store is exactly what the file protocol exists to avoid.
///
/// libxl: the same functions as the synchronous forms (libxl is synchronous).
extension UserdataStore {
    /// Async `store(domid:userid:data:)`.
    ///
    /// libxl: `libxl_userdata_store`.
    public func store(domid: DomainID, userid: UserdataID, data: [UInt8]) async throws(UserdataError) {
        try await Self.offload { () throws(UserdataError) in try self.store(domid: domid, userid: userid, data: data) }
    }

    /// Async `retrieve(domid:userid:)`.
    ///
    /// libxl: `libxl_userdata_retrieve`.
    public func retrieve(domid: DomainID, userid: UserdataID) async throws(UserdataError) -> [UInt8]? {
        try await Self.offload { () throws(UserdataError) in try self.retrieve(domid: domid, userid: userid) }
    }

    /// Async `unlink(domid:userid:)`.
    ///
    /// libxl: `libxl_userdata_unlink`.
    public func unlink(domid: DomainID, userid: UserdataID) async throws(UserdataError) {
        try await Self.offload { () throws(UserdataError) in try self.unlink(domid: domid, userid: userid) }
    }

    /// Async `destroyAll(domid:uuid:)`.
    ///
    /// libxl: `libxl__userdata_destroyall` under the domain lock.
    @discardableResult
    public func destroyAll(domid: DomainID, uuid: DomainUUID) async throws(UserdataError) -> [String] {
        try await Self.offload { () throws(UserdataError) in try self.destroyAll(domid: domid, uuid: uuid) }
    }

    /// Runs `work` on a Dispatch worker thread and resumes with its result.
    static func offload<Value: Sendable>(
        _ work: @escaping @Sendable () throws(UserdataError) -> Value
    ) async throws(UserdataError) -> Value {
        let outcome: Result<Value, UserdataError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result { () throws(UserdataError) -> Value in try work() })
            }
        }
        return try outcome.get()
    }
}
