package org.televisit.android

import android.content.ComponentName
import android.content.Context
import android.net.Uri
import android.os.Bundle
import android.telecom.PhoneAccount
import android.telecom.PhoneAccountHandle
import android.telecom.TelecomManager
import android.telecom.VideoProfile
import org.televisit.TelevisitCall
import org.televisit.ffi.CallEvent

/** How [VisitTelecom.start] went. */
enum class TelecomStart {
    /** Telecom is placing the call; [TelevisitConnectionService] takes it from here. */
    PLACED,

    /** The system does not allow a call now (an emergency call is in progress, say). */
    NOT_PERMITTED,

    /** This process is already in a visit. */
    ALREADY_IN_A_VISIT,
}

/**
 * Registers the visit with Android's Telecom as a self-managed call (the system then treats it as a
 * call: audio focus, Bluetooth and car buttons, hold for a cellular call) and keeps the foreground
 * service up while it lasts. Needs `MANAGE_OWN_CALLS` (declared in the library's manifest).
 *
 * ```
 * VisitTelecom.register(context, "Televisit")          // once, e.g. in Application.onCreate
 * val call = TelevisitCall.open(link)
 * VisitTelecom.start(context, call, video = true) { showBusy() }
 * call.join()
 * ```
 */
object VisitTelecom {
    /** The address Telecom shows; deliberately the same for every visit (no patient data). */
    val ADDRESS: Uri = Uri.fromParts("televisit", "visit", null)

    /** This app's self-managed phone account. */
    fun accountHandle(context: Context) =
        PhoneAccountHandle(ComponentName(context, TelevisitConnectionService::class.java), "televisit")

    /** Registers (or updates) the phone account; [label] is what the system shows for the calls. */
    fun register(context: Context, label: CharSequence) {
        val account = PhoneAccount.builder(accountHandle(context), label)
            .setCapabilities(PhoneAccount.CAPABILITY_SELF_MANAGED or PhoneAccount.CAPABILITY_VIDEO_CALLING)
            .build()
        context.getSystemService(TelecomManager::class.java).registerPhoneAccount(account)
    }

    /**
     * Places [call] with Telecom and starts [VisitForegroundService]. [onRefused] runs if Telecom
     * refuses it later (another app's call it cannot hold). When the call ends, the connection is
     * disconnected, the service stopped and the process free for the next visit.
     */
    fun start(context: Context, call: TelevisitCall, video: Boolean, onRefused: () -> Unit = {}): TelecomStart {
        val app = context.applicationContext
        val telecom = app.getSystemService(TelecomManager::class.java)
        val handle = accountHandle(app)
        synchronized(ActiveVisit) {
            if (ActiveVisit.current != null) return TelecomStart.ALREADY_IN_A_VISIT
            if (!telecom.isOutgoingCallPermitted(handle)) return TelecomStart.NOT_PERMITTED
            ActiveVisit.current = call to video
            ActiveVisit.onRefused = onRefused
        }
        call.observe { event ->
            if (event is CallEvent.Ended) finish(app, call)
        }
        VisitForegroundService.start(app, video)
        val extras = Bundle().apply {
            putParcelable(TelecomManager.EXTRA_PHONE_ACCOUNT_HANDLE, handle)
            putInt(
                TelecomManager.EXTRA_START_CALL_WITH_VIDEO_STATE,
                if (video) VideoProfile.STATE_BIDIRECTIONAL else VideoProfile.STATE_AUDIO_ONLY,
            )
        }
        telecom.placeCall(ADDRESS, extras)
        return TelecomStart.PLACED
    }

    /** The visit is over (or was refused): stop the service and free the process for the next one. */
    internal fun finish(context: Context, call: TelevisitCall) {
        synchronized(ActiveVisit) {
            if (ActiveVisit.current?.first !== call) return
            ActiveVisit.current = null
            ActiveVisit.onRefused = null
        }
        VisitForegroundService.stop(context)
    }
}
