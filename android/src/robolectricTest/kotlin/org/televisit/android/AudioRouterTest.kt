package org.televisit.android

import android.content.Context
import android.media.AudioDeviceInfo
import android.media.AudioManager
import android.os.Build
import android.os.Looper
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.shadows.AudioDeviceInfoBuilder

/** The router against Robolectric's AudioManager (SDK 34), as headsets come and go. */
@RunWith(RobolectricTestRunner::class)
class AudioRouterTest {
    private val context: Context = RuntimeEnvironment.getApplication()
    private val audio = context.getSystemService(AudioManager::class.java)
    private val shadow = shadowOf(audio)
    private val earpiece = device(AudioDeviceInfo.TYPE_BUILTIN_EARPIECE)
    private val speaker = device(AudioDeviceInfo.TYPE_BUILTIN_SPEAKER)
    private val wired = device(AudioDeviceInfo.TYPE_WIRED_HEADSET)
    private val bluetooth = device(AudioDeviceInfo.TYPE_BLUETOOTH_SCO)
    private val states = mutableListOf<AudioRouter.State>()

    private fun device(type: Int): AudioDeviceInfo = AudioDeviceInfoBuilder.newBuilder().setType(type).build()

    /** A device appears or goes, as the system reports it (communication list + device callback). */
    private fun plug(device: AudioDeviceInfo) {
        shadow.addAvailableCommunicationDevice(device, false)
        shadow.addOutputDevice(device, true)
        shadowOf(Looper.getMainLooper()).idle()
    }

    private fun unplug(device: AudioDeviceInfo) {
        shadow.removeAvailableCommunicationDevice(device, false)
        shadow.removeOutputDevice(device, true)
        shadowOf(Looper.getMainLooper()).idle()
    }

    private fun phone(vararg devices: AudioDeviceInfo) {
        shadow.setAvailableCommunicationDevices(devices.toList())
        shadow.setOutputDevices(devices.toList())
    }

    @Test
    fun `a video visit starts on the speaker in communication mode and follows headsets`() {
        phone(earpiece, speaker)
        audio.mode = AudioManager.MODE_NORMAL
        val router = AudioRouter(context, video = true, onChange = { states += it })
        router.start()
        assertEquals(AudioManager.MODE_IN_COMMUNICATION, audio.mode)
        assertEquals(AudioDeviceInfo.TYPE_BUILTIN_SPEAKER, audio.communicationDevice?.type)
        assertEquals(AudioRouter.State(AudioRoute.SPEAKER, setOf(AudioRoute.EARPIECE, AudioRoute.SPEAKER)), router.state)

        plug(wired)
        assertEquals(AudioDeviceInfo.TYPE_WIRED_HEADSET, audio.communicationDevice?.type)
        plug(bluetooth)
        assertEquals(AudioDeviceInfo.TYPE_BLUETOOTH_SCO, audio.communicationDevice?.type)
        unplug(bluetooth)
        assertEquals(AudioDeviceInfo.TYPE_WIRED_HEADSET, audio.communicationDevice?.type)
        unplug(wired)
        assertEquals(AudioDeviceInfo.TYPE_BUILTIN_SPEAKER, audio.communicationDevice?.type)
        assertEquals(
            listOf(AudioRoute.SPEAKER, AudioRoute.WIRED_HEADSET, AudioRoute.BLUETOOTH, AudioRoute.WIRED_HEADSET, AudioRoute.SPEAKER),
            states.map { it.route },
        )

        router.stop()
        assertNull("the communication device is released", audio.communicationDevice)
        assertEquals(AudioManager.MODE_NORMAL, audio.mode)
        plug(bluetooth) // no longer followed
        assertNull(audio.communicationDevice)
    }

    @Test
    fun `the user's pick and the camera switch move the route`() {
        phone(earpiece, speaker)
        val router = AudioRouter(context, video = true)
        router.start()
        router.select(AudioRoute.EARPIECE)
        assertEquals(AudioDeviceInfo.TYPE_BUILTIN_EARPIECE, audio.communicationDevice?.type)
        router.select(null)
        assertEquals(AudioDeviceInfo.TYPE_BUILTIN_SPEAKER, audio.communicationDevice?.type)
        router.setVideo(false) // camera off: the phone goes to the ear
        assertEquals(AudioDeviceInfo.TYPE_BUILTIN_EARPIECE, audio.communicationDevice?.type)
        router.stop()
    }

    @Suppress("DEPRECATION")
    @Test
    fun `before API 31 the speakerphone and Bluetooth SCO switches route the call`() {
        phone(earpiece, speaker)
        val router = AudioRouter(context, video = true, sdkInt = Build.VERSION_CODES.R)
        router.start()
        assertTrue("video: speakerphone on", audio.isSpeakerphoneOn)
        assertNull("the API 31 call is not used", audio.communicationDevice)
        plug(bluetooth)
        assertEquals(AudioRoute.BLUETOOTH, router.state.route)
        assertTrue(audio.isBluetoothScoOn)
        assertFalse(audio.isSpeakerphoneOn)
        unplug(bluetooth)
        assertTrue(audio.isSpeakerphoneOn)
        router.setVideo(false)
        assertFalse("voice only: the earpiece", audio.isSpeakerphoneOn)
        router.stop()
        assertEquals(AudioManager.MODE_NORMAL, audio.mode)
    }
}
