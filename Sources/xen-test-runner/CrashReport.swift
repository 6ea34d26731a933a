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
        // The first backtrace() loads libgcc_s (allocating): do it now, not in the handler.
        _ = cBacktrace(frames, 64)
        for caught in [SIGSEGV, SIGBUS, SIGILL, SIGABRT, SIGTRAP] {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = { number, info, _ in
                // Async-signal-safe: no allocation here. An abort from inside malloc (heap corruption found)
                // holds the arena lock, and a handler that allocates would deadlock that thread silently.
                // si_addr is the first field of the fault union, after si_signo, si_errno, si_code and padding.
                let address = info.map { UnsafeRawPointer($0).load(fromByteOffset: 16, as: UInt.self) } ?? 0
                writeRaw("XT-CRASH signal ")
                writeNumber(UInt(number), radix: 10)
                writeRaw(" fault address 0x")
                writeNumber(address, radix: 16)
                writeRaw("\n")
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

/// Preallocated for the handler (it must not allocate).
private nonisolated(unsafe) let frames = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)

private func writeRaw(_ text: StaticString) {
    _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
}

/// Formats `value` into a stack buffer and writes it (no allocation).
private func writeNumber(_ value: UInt, radix: UInt) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
        var index = 24
        var rest = value
        repeat {
            index -= 1
            let digit = UInt8(rest % radix)
            buffer[index] = digit < 10 ? 48 + digit : 87 + digit
            rest /= radix
        } while rest > 0 && index > 0
        _ = write(2, buffer.baseAddress! + index, 24 - index)
    }
}
