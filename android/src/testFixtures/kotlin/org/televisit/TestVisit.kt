package org.televisit

import java.io.File
import java.net.ServerSocket
import java.nio.file.Files
import java.util.concurrent.TimeUnit

/** The `televisit` binary the tests drive (the server and the headless participant). */
val televisitBin: String =
    System.getProperty("televisit.bin") ?: System.getenv("TELEVISIT_BIN") ?: error("set -Dtelevisit.bin")

/**
 * A real Televisit server on loopback with a fresh SQLite database and a demo visit (call
 * started), plus headless participants (`televisit join`) to play the other side.
 */
class TestVisit : AutoCloseable {
    private val dir: File = Files.createTempDirectory("televisit-kotlin").toFile()
    private val server: Process
    private val others = mutableListOf<Process>()

    /** The doctor's join link. */
    val doctorLink: String

    /** The patient's join link. */
    val patientLink: String

    init {
        val port = ServerSocket(0).use { it.localPort }
        server = ProcessBuilder(
            televisitBin, "serve", "--demo",
            "--listen", "127.0.0.1:$port",
            "--public-url", "http://127.0.0.1:$port",
            "--database-url", "sqlite://${dir.resolve("visit.db")}",
        ).redirectError(dir.resolve("server.log")).start()
        val links = mutableMapOf<String, String>()
        val lines = server.inputStream.bufferedReader()
        while (links.size < 2) {
            val line = lines.readLine() ?: error("the server stopped: ${dir.resolve("server.log").readText()}")
            Regex("""(Doctor's|Patient's) link:\s+(\S+)""").find(line)?.let { links[it.groupValues[1]] = it.groupValues[2] }
        }
        Thread { lines.forEachLine { } }.apply { isDaemon = true }.start() // keep the pipe drained
        doctorLink = links.getValue("Doctor's")
        patientLink = links.getValue("Patient's")
    }

    /** Starts `televisit join <link> ...` (loopback ICE); its output goes to a file read by [Headless.output]. */
    fun headless(link: String, vararg args: String): Headless {
        val out = File.createTempFile("headless", ".txt", dir)
        val process = ProcessBuilder(listOf(televisitBin, "join", link, "--udp", "127.0.0.1:0") + args)
            .redirectOutput(out).redirectError(ProcessBuilder.Redirect.appendTo(out)).start()
        others += process
        return Headless(process, out)
    }

    override fun close() {
        others.forEach { it.destroy() }
        server.destroy()
        server.waitFor(10, TimeUnit.SECONDS)
        dir.deleteRecursively()
    }
}

/** A running headless participant. */
class Headless(val process: Process, private val out: File) {
    /** Everything it printed so far. */
    fun output(): String = out.readText()

    /** Waits for it to exit; returns the exit code. */
    fun waitFor(seconds: Long): Int {
        check(process.waitFor(seconds, TimeUnit.SECONDS)) { "televisit join still running:\n${output()}" }
        return process.exitValue()
    }
}

/** Replaces the link's token with one of the same shape: [expiry] in Unix seconds, secret changed. */
fun forgeLink(link: String, expiry: Long, secretChar: Char = 'A'): String {
    val (base, token) = link.split("#token=")
    val secret = token.substringAfterLast('.')
    return "$base#token=tv1.$expiry.${secretChar.toString().repeat(secret.length)}"
}

/** A [TestVisit] and its patient's call (no listener), for tests of the glue around one call. */
class PatientCall : AutoCloseable {
    /** The visit the call belongs to. */
    val visit = TestVisit()

    /** The patient's call, not joined. */
    val call = org.televisit.ffi.Call(
        visit.patientLink,
        object : org.televisit.ffi.CallListener { override fun onEvent(event: org.televisit.ffi.CallEvent) {} },
        org.televisit.ffi.CallOptions(),
    )

    override fun close() {
        call.release()
        call.close()
        visit.close()
    }
}
