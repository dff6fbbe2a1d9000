package org.televisit.android

import android.telecom.Connection
import android.telecom.DisconnectCause
import android.telecom.VideoProfile
import org.televisit.TelevisitCall
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallState
import org.televisit.ffi.EndReason

/**
 * The visit as Android's Telecom sees it (a self-managed call): dialing while the patient waits or
 * the peers connect, active once connected, disconnected with the right cause when the call ends.
 * Telecom's own requests go to the call: hang-up from a headset button, a car or a watch ends it;
 * a cellular call puts it on hold (microphone and camera off) until it is resumed.
 */
class VisitConnection internal constructor(private val call: TelevisitCall, video: Boolean) : Connection() {
    init {
        connectionProperties = PROPERTY_SELF_MANAGED
        connectionCapabilities = CAPABILITY_MUTE or CAPABILITY_SUPPORT_HOLD or CAPABILITY_HOLD
        audioModeIsVoip = true
        videoState = if (video) VideoProfile.STATE_BIDIRECTIONAL else VideoProfile.STATE_AUDIO_ONLY
        setDialing()
    }

    /** Follows the call (on the core's event thread; Connection's setters are thread-safe). */
    internal fun onCallEvent(event: CallEvent) {
        if (state == STATE_DISCONNECTED) return
        when {
            event == CallEvent.StateChanged(CallState.CONNECTED) && state != STATE_HOLDING -> setActive()
            event is CallEvent.Ended -> {
                setDisconnected(disconnectCause(event.reason, call.role))
                destroy()
            }
        }
    }

    override fun onDisconnect() {
        ActiveVisit.hangUp(call)
        setDisconnected(DisconnectCause(DisconnectCause.LOCAL))
        destroy()
    }

    override fun onAbort() = onDisconnect()

    override fun onHold() {
        call.setMicrophoneEnabled(false)
        call.setCameraEnabled(false)
        setOnHold()
    }

    override fun onUnhold() {
        call.setMicrophoneEnabled(true)
        call.setCameraEnabled(videoState != VideoProfile.STATE_AUDIO_ONLY)
        setActive()
    }

    internal companion object {
        /** Telecom's cause for how the call ended: this side, the other side, or an error. */
        fun disconnectCause(reason: EndReason, ownRole: org.televisit.ffi.Role?): DisconnectCause = when (reason) {
            is EndReason.CallEnded -> DisconnectCause(
                if (reason.endedBy != null && reason.endedBy == ownRole) DisconnectCause.LOCAL else DisconnectCause.REMOTE,
            )
            EndReason.Left -> DisconnectCause(DisconnectCause.LOCAL)
            is EndReason.Failed -> DisconnectCause(DisconnectCause.ERROR, reason.error.message)
        }
    }
}
