package org.televisit.android

import android.content.Context
import android.media.AudioDeviceCallback
import android.media.AudioDeviceInfo
import android.media.AudioManager
import android.os.Build
import android.os.Handler
import android.os.Looper

/**
 * Puts the call's audio on the device [AudioRoutePolicy] picks and follows headsets as they come and
 * go. On API 31+ it uses the system's communication-device API (`AudioManager.setCommunicationDevice`);
 * before that, the speakerphone and Bluetooth SCO switches. Start it when the call connects and stop
 * it when the call ends (it restores the audio mode it found). Not thread-safe: use it from the main
 * thread. [onChange] hears every new [State], for the call screen's route picker.
 */
class AudioRouter(
    context: Context,
    video: Boolean,
    private val onChange: (State) -> Unit = {},
    private val sdkInt: Int = Build.VERSION.SDK_INT,
) {
    /** The route in use and the routes the user could pick. */
    data class State(val route: AudioRoute?, val available: Set<AudioRoute>)

    private val audio = context.getSystemService(AudioManager::class.java)
    private val handler = Handler(Looper.getMainLooper())
    private var video = video
    private var userChoice: AudioRoute? = null
    private var previousMode: Int? = null

    /** What is in use now. */
    var state: State = State(null, emptySet())
        private set

    private val deviceCallback = object : AudioDeviceCallback() {
        override fun onAudioDevicesAdded(addedDevices: Array<out AudioDeviceInfo>) = update()
        override fun onAudioDevicesRemoved(removedDevices: Array<out AudioDeviceInfo>) = update()
    }

    /** Enters communication mode, routes the audio and starts following device changes. */
    fun start() {
        if (previousMode != null) return
        previousMode = audio.mode
        audio.mode = AudioManager.MODE_IN_COMMUNICATION
        audio.registerAudioDeviceCallback(deviceCallback, handler)
        update()
    }

    /** The user picked [route] in the call screen; null goes back to the automatic choice. */
    fun select(route: AudioRoute?) {
        userChoice = route
        update()
    }

    /** The camera was turned on or off: a voice-only call prefers the earpiece. */
    fun setVideo(video: Boolean) {
        this.video = video
        update()
    }

    /** Stops following devices, releases the route and restores the audio mode. Idempotent. */
    fun stop() {
        val mode = previousMode ?: return
        previousMode = null
        audio.unregisterAudioDeviceCallback(deviceCallback)
        if (sdkInt >= Build.VERSION_CODES.S) {
            audio.clearCommunicationDevice()
        } else {
            @Suppress("DEPRECATION")
            audio.isSpeakerphoneOn = false
            @Suppress("DEPRECATION")
            audio.isBluetoothScoOn = false
            @Suppress("DEPRECATION")
            audio.stopBluetoothSco()
        }
        audio.mode = mode
        state = State(null, emptySet())
    }

    private fun update() {
        if (previousMode == null) return
        val devices = candidates().groupBy { routeOf(it) }.filterKeys { it != null }
        val available = devices.keys.filterNotNull().toSet()
        val route = AudioRoutePolicy.choose(available, userChoice, video)
        if (route != null) apply(route, devices.getValue(route).first())
        val next = State(route, available)
        if (next != state) {
            state = next
            onChange(next)
        }
    }

    private fun candidates(): List<AudioDeviceInfo> =
        if (sdkInt >= Build.VERSION_CODES.S) audio.availableCommunicationDevices
        else audio.getDevices(AudioManager.GET_DEVICES_OUTPUTS).toList()

    private fun apply(route: AudioRoute, device: AudioDeviceInfo) {
        if (sdkInt >= Build.VERSION_CODES.S) {
            val current = audio.communicationDevice
            if (current == null || current.id != device.id || current.type != device.type) {
                audio.setCommunicationDevice(device)
            }
            return
        }
        // Before API 31: switches. A plugged wired headset takes over from the earpiece by itself.
        val bluetooth = route == AudioRoute.BLUETOOTH
        @Suppress("DEPRECATION")
        if (bluetooth) audio.startBluetoothSco() else audio.stopBluetoothSco()
        @Suppress("DEPRECATION")
        audio.isBluetoothScoOn = bluetooth
        @Suppress("DEPRECATION")
        audio.isSpeakerphoneOn = route == AudioRoute.SPEAKER
    }

    companion object {
        /** The route a system audio device stands for, or null if a call cannot use it. */
        fun routeOf(device: AudioDeviceInfo): AudioRoute? = when (device.type) {
            AudioDeviceInfo.TYPE_BUILTIN_EARPIECE -> AudioRoute.EARPIECE
            AudioDeviceInfo.TYPE_BUILTIN_SPEAKER -> AudioRoute.SPEAKER
            AudioDeviceInfo.TYPE_WIRED_HEADSET, AudioDeviceInfo.TYPE_WIRED_HEADPHONES,
            AudioDeviceInfo.TYPE_USB_HEADSET -> AudioRoute.WIRED_HEADSET
            AudioDeviceInfo.TYPE_BLUETOOTH_SCO, AudioDeviceInfo.TYPE_BLE_HEADSET,
            AudioDeviceInfo.TYPE_HEARING_AID -> AudioRoute.BLUETOOTH
            else -> null
        }
    }
}
