import Synchronization

/// A shared counter for workers.
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    /// Adds one; returns the new value.
    func increment() -> Int { atomic.add(1, ordering: .relaxed).newValue }
    var value: Int { atomic.load(ordering: .relaxed) }
}

/// Results written by index from many workers.
final class SeededStore: Sendable {
    private let slots: Mutex<[SeededLicense?]>
    init(count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }
    func set(_ index: Int, _ license: SeededLicense) { slots.withLock { $0[index] = license } }
    var all: [SeededLicense] { slots.withLock { $0.compactMap { $0 } } }
}
