package org.televisit.android

import android.Manifest
import android.app.Notification
import android.content.Intent
import android.content.pm.ServiceInfo
import android.os.Build
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import java.io.File
import javax.xml.parsers.DocumentBuilderFactory

/** The foreground service's types, notification and lifecycle (SDK 34). */
@RunWith(RobolectricTestRunner::class)
class VisitForegroundServiceTest {
    private val mic = ServiceInfo.FOREGROUND_SERVICE_TYPE_MICROPHONE
    private val camera = ServiceInfo.FOREGROUND_SERVICE_TYPE_CAMERA

    @Test
    fun `types follow the visit and the granted permissions`() {
        val all = { _: String -> true }
        assertEquals(mic or camera, VisitForegroundService.foregroundTypes(34, video = true, granted = all))
        assertEquals(mic, VisitForegroundService.foregroundTypes(34, video = false, granted = all))
        val noCamera = { p: String -> p != Manifest.permission.CAMERA }
        assertEquals("API 34 throws on a type without its permission", mic, VisitForegroundService.foregroundTypes(34, true, noCamera))
        assertEquals("no such types before API 30", 0, VisitForegroundService.foregroundTypes(29, true, all))
    }

    @Test
    fun `starting shows an ongoing call notification with a hang-up action and no patient data`() {
        val intent = Intent(RuntimeEnvironment.getApplication(), VisitForegroundService::class.java)
        val controller = Robolectric.buildService(VisitForegroundService::class.java, intent).create().startCommand(0, 1)
        val service = shadowOf(controller.get())
        val notification = service.lastForegroundNotification
        assertEquals(VisitForegroundService.NOTIFICATION_ID, service.lastForegroundNotificationId)
        assertTrue(notification.flags and Notification.FLAG_ONGOING_EVENT != 0)
        assertEquals(Notification.CATEGORY_CALL, notification.category)
        assertEquals("Video visit in progress", notification.extras.getString(Notification.EXTRA_TITLE))
        assertEquals(listOf("Hang up"), notification.actions.map { it.title.toString() })
        val hangUp = shadowOf(notification.actions[0].actionIntent).savedIntent
        assertEquals(VisitForegroundService.ACTION_HANG_UP, hangUp.action)

        // The hang-up button with no visit in progress only stops the service.
        controller.withIntent(hangUp).startCommand(0, 2)
        assertTrue(service.isStoppedBySelf)
    }

    @Test
    fun `start and stop go through the system's service calls`() {
        val app = RuntimeEnvironment.getApplication()
        VisitForegroundService.start(app, video = true)
        val started = shadowOf(app).nextStartedService
        assertEquals(VisitForegroundService::class.java.name, started.component?.className)
        VisitForegroundService.stop(app)
        assertEquals(VisitForegroundService::class.java.name, shadowOf(app).nextStoppedService.component?.className)
    }

    @Test
    fun `the manifest declares the service with the camera and microphone types`() {
        val manifest = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(File("src/main/AndroidManifest.xml"))
        val services = manifest.getElementsByTagName("service")
        val types = (0 until services.length).map { services.item(it).attributes }
            .associate { it.getNamedItem("android:name").nodeValue to it.getNamedItem("android:foregroundServiceType")?.nodeValue }
        assertEquals("camera|microphone", types[VisitForegroundService::class.java.name])
        assertTrue(TelevisitConnectionService::class.java.name in types)
    }
}
