package org.televisit.android

import android.Manifest
import android.app.Activity
import android.os.Build
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.televisit.android.VisitPermission.BLUETOOTH
import org.televisit.android.VisitPermission.CAMERA
import org.televisit.android.VisitPermission.MICROPHONE
import org.televisit.android.VisitPermission.NOTIFICATIONS
import java.io.File
import javax.xml.parsers.DocumentBuilderFactory

/** The permission helpers against Robolectric's package manager (SDK 34). */
@RunWith(RobolectricTestRunner::class)
class VisitPermissionsTest {
    private val activity: Activity = Robolectric.buildActivity(Activity::class.java).setup().get()
    private val app = shadowOf(activity.application)

    @Test
    fun `each API level asks for what it has`() {
        assertEquals(listOf(CAMERA, MICROPHONE, NOTIFICATIONS, BLUETOOTH), VisitPermissions.needed(video = true, sdkInt = 34))
        assertEquals(listOf(CAMERA, MICROPHONE, BLUETOOTH), VisitPermissions.needed(video = true, sdkInt = 31))
        assertEquals(listOf(MICROPHONE), VisitPermissions.needed(video = false, sdkInt = 26))
    }

    @Test
    fun `the camera and microphone block a video visit, notifications and Bluetooth do not`() {
        assertEquals(
            PermissionStatus.Blocked(listOf(CAMERA, MICROPHONE), listOf(NOTIFICATIONS, BLUETOOTH), askAgain = true),
            VisitPermissions.check(activity, video = true),
        )
        app.grantPermissions(Manifest.permission.RECORD_AUDIO)
        assertEquals(
            "a voice-only visit needs no camera",
            PermissionStatus.ReadyWithout(listOf(NOTIFICATIONS, BLUETOOTH)),
            VisitPermissions.check(activity, video = false),
        )
        app.grantPermissions(Manifest.permission.CAMERA)
        assertEquals(PermissionStatus.ReadyWithout(listOf(NOTIFICATIONS, BLUETOOTH)), VisitPermissions.check(activity, video = true))
        app.grantPermissions(Manifest.permission.POST_NOTIFICATIONS, Manifest.permission.BLUETOOTH_CONNECT)
        assertEquals(PermissionStatus.Ready, VisitPermissions.check(activity, video = true))
    }

    @Test
    fun `the request asks only for what is missing`() {
        app.grantPermissions(Manifest.permission.CAMERA, Manifest.permission.BLUETOOTH_CONNECT)
        VisitPermissions.request(activity, video = true, requestCode = 7)
        val request = shadowOf(activity).lastRequestedPermission
        assertEquals(7, request.requestCode)
        assertEquals(listOf(Manifest.permission.RECORD_AUDIO, Manifest.permission.POST_NOTIFICATIONS), request.requestedPermissions.toList())
    }

    @Test
    fun `a refusal for good says the settings are the only way left`() {
        app.grantPermissions(Manifest.permission.CAMERA)
        val packageManager = shadowOf(activity.packageManager)
        // Refused once: Android would show the rationale and ask again.
        packageManager.setShouldShowRequestPermissionRationale(Manifest.permission.RECORD_AUDIO, true)
        val once = VisitPermissions.afterRequest(activity, video = true)
        assertTrue("$once", once is PermissionStatus.Blocked && once.required == listOf(MICROPHONE) && once.askAgain)
        // "Don't ask again": no rationale any more.
        packageManager.setShouldShowRequestPermissionRationale(Manifest.permission.RECORD_AUDIO, false)
        val forGood = VisitPermissions.afterRequest(activity, video = true)
        assertTrue("$forGood", forGood is PermissionStatus.Blocked && !forGood.askAgain)
    }

    @Test
    fun `the library's manifest declares every permission the glue uses`() {
        val manifest = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(File("src/main/AndroidManifest.xml"))
        val nodes = manifest.getElementsByTagName("uses-permission")
        val declared = (0 until nodes.length).map { nodes.item(it).attributes.getNamedItem("android:name").nodeValue }.toSet()
        val used = VisitPermission.entries.map { it.manifestName } + listOf(
            Manifest.permission.MANAGE_OWN_CALLS, Manifest.permission.MODIFY_AUDIO_SETTINGS,
            Manifest.permission.FOREGROUND_SERVICE, Manifest.permission.FOREGROUND_SERVICE_CAMERA,
            Manifest.permission.FOREGROUND_SERVICE_MICROPHONE,
        )
        assertEquals(emptySet<String>(), used.toSet() - declared)
    }
}
