package org.televisit.android

import android.Manifest
import android.app.Activity
import android.content.Context
import android.content.pm.PackageManager
import android.os.Build

/** A runtime permission a visit uses. */
enum class VisitPermission(
    /** The manifest name, as `Activity.requestPermissions` takes it. */
    val manifestName: String,
    /** The first API level that asks the user for it (granted at install before). */
    val sinceSdk: Int,
) {
    /** The camera: required for a video visit. */
    CAMERA(Manifest.permission.CAMERA, Build.VERSION_CODES.M),

    /** The microphone: required for every visit. */
    MICROPHONE(Manifest.permission.RECORD_AUDIO, Build.VERSION_CODES.M),

    /** The ongoing-call notification: optional (without it the notification is hidden, the call goes on). */
    NOTIFICATIONS(Manifest.permission.POST_NOTIFICATIONS, Build.VERSION_CODES.TIRAMISU),

    /** Bluetooth headsets: optional (without it the call plays on the phone). */
    BLUETOOTH(Manifest.permission.BLUETOOTH_CONNECT, Build.VERSION_CODES.S),
}

/** What the permissions allow, before or after asking the user. */
sealed interface PermissionStatus {
    /** Everything the visit uses is granted. */
    data object Ready : PermissionStatus

    /** The visit can start; these optional ones are missing (say what the user loses). */
    data class ReadyWithout(val optional: List<VisitPermission>) : PermissionStatus

    /**
     * The visit cannot start: [required] are missing. [askAgain] is false when the user refused for
     * good ("don't ask again"): only the app's page in the system settings can grant them now.
     */
    data class Blocked(val required: List<VisitPermission>, val optional: List<VisitPermission>, val askAgain: Boolean) :
        PermissionStatus
}

/**
 * The runtime permissions of a visit: which ones this device asks for, which are missing, and what
 * the user's answer means. A voice-only visit (`video = false`) does not need the camera.
 *
 * ```
 * when (val s = VisitPermissions.check(activity, video = true)) {
 *     is PermissionStatus.Blocked -> VisitPermissions.request(activity, video = true, REQUEST)
 *     else -> startVisit()
 * }
 * // in onRequestPermissionsResult: VisitPermissions.afterRequest(activity, video = true)
 * ```
 */
object VisitPermissions {
    /** The permissions this API level asks the user for, for a visit with or without video. */
    fun needed(video: Boolean, sdkInt: Int = Build.VERSION.SDK_INT): List<VisitPermission> =
        VisitPermission.entries.filter { sdkInt >= it.sinceSdk && (video || it != VisitPermission.CAMERA) }

    /** Whether the visit can start with what is granted now. */
    fun check(context: Context, video: Boolean, sdkInt: Int = Build.VERSION.SDK_INT): PermissionStatus =
        status(missing(context, video, sdkInt), askAgain = true)

    /** Asks the user for what is missing; the answer comes to the activity's `onRequestPermissionsResult`. */
    fun request(activity: Activity, video: Boolean, requestCode: Int, sdkInt: Int = Build.VERSION.SDK_INT) {
        val missing = missing(activity, video, sdkInt)
        if (missing.isNotEmpty()) activity.requestPermissions(missing.map { it.manifestName }.toTypedArray(), requestCode)
    }

    /**
     * Call from `onRequestPermissionsResult`: what the user's answer allows. A required permission the
     * system would not ask for again makes [PermissionStatus.Blocked.askAgain] false.
     */
    fun afterRequest(activity: Activity, video: Boolean, sdkInt: Int = Build.VERSION.SDK_INT): PermissionStatus {
        val missing = missing(activity, video, sdkInt)
        val askAgain = missing.filter { it.required }
            .all { activity.shouldShowRequestPermissionRationale(it.manifestName) }
        return status(missing, askAgain)
    }

    private fun missing(context: Context, video: Boolean, sdkInt: Int) = needed(video, sdkInt)
        .filter { context.checkSelfPermission(it.manifestName) != PackageManager.PERMISSION_GRANTED }

    // The camera is among the missing ones only for a video visit (see [needed]).
    private val VisitPermission.required get() = this == VisitPermission.MICROPHONE || this == VisitPermission.CAMERA

    private fun status(missing: List<VisitPermission>, askAgain: Boolean): PermissionStatus {
        val required = missing.filter { it.required }
        val optional = missing - required.toSet()
        return when {
            required.isNotEmpty() -> PermissionStatus.Blocked(required, optional, askAgain)
            optional.isNotEmpty() -> PermissionStatus.ReadyWithout(optional)
            else -> PermissionStatus.Ready
        }
    }
}
