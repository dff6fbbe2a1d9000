package org.televisit.android

/** Where the call's audio plays (and, for headsets, where the microphone is). */
enum class AudioRoute { EARPIECE, SPEAKER, WIRED_HEADSET, BLUETOOTH }

/**
 * Which [AudioRoute] a call uses, decided without Android so it is testable anywhere:
 * [AudioRouter] feeds it the devices the system offers and applies the answer.
 *
 * The rules, as people expect them from phone and video-call apps:
 * - the user's own pick wins while that device is there;
 * - otherwise a headset beats the phone: Bluetooth first (put on for the call), then wired;
 * - otherwise a video visit plays on the speaker (the phone is held at arm's length, looking at the
 *   screen) and a voice-only one on the earpiece; a device without an earpiece (a tablet) uses the
 *   speaker.
 */
object AudioRoutePolicy {
    /**
     * The route for these [available] routes. [userChoice] is the route the user picked in the call
     * screen (null: none, or they went back to automatic); [video] is whether the camera is part of
     * the call. Null when nothing is available (no output at all: nothing to route).
     */
    fun choose(available: Set<AudioRoute>, userChoice: AudioRoute?, video: Boolean): AudioRoute? {
        if (userChoice != null && userChoice in available) return userChoice
        val handsFree = if (video) AudioRoute.SPEAKER else AudioRoute.EARPIECE
        val order = listOf(AudioRoute.BLUETOOTH, AudioRoute.WIRED_HEADSET, handsFree, AudioRoute.SPEAKER, AudioRoute.EARPIECE)
        return order.firstOrNull { it in available }
    }
}
