@testable import LicensingRPC
import Testing

extension RPCTests {
    /// The connection's rules, without a channel.
    @Suite("Connection state")
    struct ConnectionStateTests {
        @Test func answersDuringAReadGoOutTogetherAtItsEnd() {
            var state = ConnectionState()
            let outside = state.answerReady()
            #expect(outside, "outside a read an answer is flushed at once")
            state.readStarted()
            let first = state.answerReady()
            let second = state.answerReady()
            #expect(!first && !second)
            let flushed = state.readEnded()
            let again = state.readEnded()
            #expect(flushed, "the read's end flushes what was written during it")
            #expect(!again, "and only once")
            state.readStarted()
            let empty = state.readEnded()
            #expect(!empty, "a read that answered nothing flushes nothing")
        }

        @Test func readingIsHeldWhileBusyAndResumedOnceWhenRoomIsMade() {
            var state = ConnectionState()
            let free = state.readRequested(busy: false)
            let nothingHeld = state.roomMade(busy: false)
            let held = state.readRequested(busy: true)
            let stillBusy = state.roomMade(busy: true)
            let resumed = state.roomMade(busy: false)
            let resumedAgain = state.roomMade(busy: false)
            #expect(free && !nothingHeld)
            #expect(!held && !stillBusy)
            #expect(resumed && !resumedAgain, "resumed once")
        }

        @Test func aDrainingConnectionClosesOnceIdleAndFlushesFirst() {
            var state = ConnectionState()
            let serving = state.closeIfIdle(true)
            #expect(serving == (false, false), "a serving connection stays open")
            state.drain()
            #expect(!state.acceptsCalls)
            let busy = state.closeIfIdle(false)
            #expect(busy == (false, false), "calls in flight keep it open")
            state.readStarted()
            _ = state.answerReady()
            let idle = state.closeIfIdle(true)
            #expect(idle == (true, true), "closes, flushing the answers first")
            #expect(state.lifecycle == .closing)
            let twice = state.closeIfIdle(true)
            #expect(twice == (false, false), "closes once")
            state.drain()
            #expect(state.lifecycle == .closing, "draining again does not reopen it")
        }

        @Test func startingWaitingCallsDoesNotRecurse() {
            var state = ConnectionState()
            let outer = state.beginStartingWaiting()
            let nested = state.beginStartingWaiting()
            state.endStartingWaiting()
            let next = state.beginStartingWaiting()
            #expect(outer && !nested && next)
        }
    }
}
