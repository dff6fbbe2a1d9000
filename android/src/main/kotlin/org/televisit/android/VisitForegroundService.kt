package org.televisit.android

import android.Manifest
import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder

/**
 * Keeps the visit alive while the app is in the background (the user checks a message mid-visit):
 * a foreground service of type camera|microphone with an ongoing-call notification that has a
 * "Hang up" action. [VisitTelecom] starts it when the call is placed and stops it when the call
 * ends; start it while the app is in the foreground (Android 14 refuses camera and microphone
 * types from the background).
 */
class VisitForegroundService : Service() {
    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        when (intent?.action) {
            ACTION_HANG_UP -> {
                ActiveVisit.hangUp()
                stopSelf()
            }
            else -> {
                val video = intent?.getBooleanExtra(EXTRA_VIDEO, true) ?: true
                val types = foregroundTypes(Build.VERSION.SDK_INT, video, ::granted)
                if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
                    startForeground(NOTIFICATION_ID, notification(), types)
                } else {
                    startForeground(NOTIFICATION_ID, notification())
                }
            }
        }
        return START_NOT_STICKY // after the process died there is no call to keep alive
    }

    private fun granted(permission: String) = checkSelfPermission(permission) == PackageManager.PERMISSION_GRANTED

    private fun notification(): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        manager.createNotificationChannel(
            NotificationChannel(CHANNEL_ID, "Video visit", NotificationManager.IMPORTANCE_LOW),
        )
        val hangUp = PendingIntent.getService(
            this, 0, Intent(this, VisitForegroundService::class.java).setAction(ACTION_HANG_UP),
            PendingIntent.FLAG_IMMUTABLE,
        )
        val open = packageManager.getLaunchIntentForPackage(packageName)?.let {
            PendingIntent.getActivity(this, 0, it, PendingIntent.FLAG_IMMUTABLE)
        }
        // No patient data in the notification: it shows on the lock screen.
        return Notification.Builder(this, CHANNEL_ID)
            .setContentTitle("Video visit in progress")
            .setSmallIcon(android.R.drawable.sym_action_call)
            .setCategory(Notification.CATEGORY_CALL)
            .setOngoing(true)
            .setContentIntent(open)
            .addAction(Notification.Action.Builder(null, "Hang up", hangUp).build())
            .build()
    }

    companion object {
        /** The notification's id, for apps that update it. */
        const val NOTIFICATION_ID = 0x7e1e

        /** The notification channel (created on start; the user can silence it in the settings). */
        const val CHANNEL_ID = "televisit.visit"

        /** The intent action of the notification's "Hang up" button. */
        const val ACTION_HANG_UP = "org.televisit.action.HANG_UP"

        private const val EXTRA_VIDEO = "org.televisit.extra.VIDEO"

        /** Starts the service for a visit with or without the camera. */
        fun start(context: Context, video: Boolean) {
            val intent = Intent(context, VisitForegroundService::class.java).putExtra(EXTRA_VIDEO, video)
            context.startForegroundService(intent)
        }

        /** Stops the service and removes its notification. */
        fun stop(context: Context) {
            context.stopService(Intent(context, VisitForegroundService::class.java))
        }

        /**
         * The foreground service types to declare: the microphone, and the camera for a video visit,
         * each only once its permission is granted (from API 34, declaring a type without its
         * permission throws). Before API 30 there are no such types (0).
         */
        fun foregroundTypes(sdkInt: Int, video: Boolean, granted: (String) -> Boolean): Int {
            if (sdkInt < Build.VERSION_CODES.R) return 0
            var types = 0
            if (granted(Manifest.permission.RECORD_AUDIO)) types = types or ServiceInfo.FOREGROUND_SERVICE_TYPE_MICROPHONE
            if (video && granted(Manifest.permission.CAMERA)) types = types or ServiceInfo.FOREGROUND_SERVICE_TYPE_CAMERA
            return types
        }
    }
}
