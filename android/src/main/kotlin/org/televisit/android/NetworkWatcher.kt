package org.televisit.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import org.televisit.TelevisitCall

/**
 * Tells the call when the phone's network changes (Wi-Fi ↔ cellular), so it restarts ICE and
 * reconnects signaling at once instead of waiting for timeouts. Register while the call screen is
 * shown; needs the `ACCESS_NETWORK_STATE` permission (declared in the library's manifest).
 */
class NetworkWatcher(context: Context, private val call: TelevisitCall) {
    private val connectivity = context.getSystemService(ConnectivityManager::class.java)
    private var current: Network? = null

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) {
            val previous = current
            current = network
            if (previous != null && previous != network) call.networkChanged()
        }

        override fun onLost(network: Network) {
            if (network == current) {
                current = null
                call.networkChanged()
            }
        }
    }

    /** Starts watching the device's default internet connection. */
    fun start() {
        val request = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .build()
        connectivity.registerNetworkCallback(request, callback)
    }

    /** Stops watching; call when the call screen goes away. */
    fun stop() {
        connectivity.unregisterNetworkCallback(callback)
    }
}
