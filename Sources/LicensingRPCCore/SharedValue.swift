import Synchronization

/// A value behind a `Mutex` that closures share by reference (a `Mutex` cannot be captured):
/// the lock style is `Mutex` everywhere, owned by a type or, where callbacks share it, in this box.
public final class SharedValue<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) {
        mutex = Mutex(value)
    }

    public func withLock<Result: Sendable>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try mutex.withLock { value in try body(&value) }
    }
}
