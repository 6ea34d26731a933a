#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

@_silgen_name("backtrace")
private func cBacktrace(_ buffer: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ size: Int32) -> Int32
@_silgen_name("backtrace_symbols_fd")
private func cBacktraceSymbols(_ buffer: UnsafePointer<UnsafeMutableRawPointer?>, _ size: Int32, _ fd: Int32)

/// On SIGSEGV/SIGBUS/SIGILL/SIGABRT the runner prints the faulting thread's return addresses (glibc
/// `backtrace_symbols_fd`: `binary(+offset)`, to resolve with `addr2line -e` on the unstripped build) before
/// dying, so a crash inside dom0 leaves more than "Segmentation fault" on the console.
enum CrashReport {
    static func install() {
        for caught in [SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGTRAP] {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = { number, info, _ in
                // si_addr is the first field of the fault union, after si_signo, si_errno, si_code and padding.
                let address = info.map { UnsafeRawPointer($0).load(fromByteOffset: 16, as: UInt.self) } ?? 0
                let header = "XT-CRASH signal \(number) fault address 0x\(String(address, radix: 16))\n"
                _ = header.withCString { write(2, $0, strlen($0)) }
                let frames = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
                let count = cBacktrace(frames, 64)
                cBacktraceSymbols(frames, count, 2)
                signal(number, SIG_DFL)
                raise(number)
            }
            action.sa_flags = SA_SIGINFO | SA_ONSTACK
            sigaction(caught, &action, nil)
        }
        // An alternate stack: a stack overflow must still be able to run the handler.
        var stack = stack_t()
        stack.ss_size = 64 * 1024
        stack.ss_sp = UnsafeMutableRawPointer.allocate(byteCount: stack.ss_size, alignment: 16)
        stack.ss_flags = 0
        sigaltstack(&stack, nil)
    }
}
