package org.televisit

import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallState

/**
 * One process lifetime of an app: join a call with [args]`[0]` (a patient link), wait in the
 * waiting room, close, exit. `scripts/test-android` runs it 20 times: a crash at exit (a callback
 * into a freed listener, a runtime torn down twice) fails the run.
 */
fun main(args: Array<String>) = runBlocking {
    TelevisitCall.open(args[0]).use { call ->
        call.join()
        withTimeout(15_000) { call.events.first { it == CallEvent.StateChanged(CallState.WAITING_ROOM) } }
    }
    println("shutdown-check: clean")
}
