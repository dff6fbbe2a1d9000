package org.televisit.android

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.launch
import org.televisit.TelevisitCall
import org.televisit.ffi.CallException

/**
 * The one visit the process is in, between [VisitTelecom.start] and its end: Telecom creates its
 * [VisitConnection] from here, and the notification's "Hang up" reaches the call through it.
 */
internal object ActiveVisit {
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)

    /** The call being placed or in progress, and whether it has video. */
    @Volatile
    var current: Pair<TelevisitCall, Boolean>? = null

    /** Told when Telecom refused to place the call (set by [VisitTelecom.start]). */
    @Volatile
    var onRefused: (() -> Unit)? = null

    /** Ends [call] (or the current one) without waiting; its `Ended` event tells the app how it ended. */
    fun hangUp(call: TelevisitCall? = current?.first) {
        call ?: return
        scope.launch {
            try {
                call.hangUp()
            } catch (_: CallException) {
                // Already over, closed by the app, or the network failed: the call's `Ended` event
                // (or its absence after close) is how the app learns the outcome.
            }
        }
    }
}
