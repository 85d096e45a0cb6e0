package scion.io.safetensors.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Samples {@code /proc/self/status} every 20 ms on a daemon thread and keeps the peaks of anonymous RSS (heap, direct
 * buffers, JVM) and file-backed RSS (mapped file pages, which the kernel may drop under memory pressure). Linux only;
 * elsewhere it reports zeros.
 */
public final class MemorySampler implements AutoCloseable {
    private volatile boolean running = true;
    private volatile long peakAnonKb;
    private volatile long peakFileKb;
    private final Thread thread;

    public MemorySampler() {
        thread = new Thread(this::loop, "memory-sampler");
        thread.setDaemon(true);
        thread.start();
    }

    private void loop() {
        while (running) {
            sample();
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    private void sample() {
        peakAnonKb = Math.max(peakAnonKb, statusKb("RssAnon:"));
        peakFileKb = Math.max(peakFileKb, statusKb("RssFile:"));
    }

    static long statusKb(String key) {
        try {
            List<String> lines = Files.readAllLines(Path.of("/proc/self/status"));
            for (String l : lines) {
                if (l.startsWith(key)) {
                    return Long.parseLong(
                            l.substring(key.length()).replace("kB", "").trim());
                }
            }
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
        return 0;
    }

    /** One line: peak anonymous and file-backed RSS seen, and the kernel's VmHWM (peak total RSS). */
    public String report() {
        sample();
        return String.format(
                "peak RSS sampled: anonymous %.0f MiB, file-backed (mapped) %.0f MiB; VmHWM %.0f MiB",
                peakAnonKb / 1024.0, peakFileKb / 1024.0, statusKb("VmHWM:") / 1024.0);
    }

    @Override
    public void close() {
        running = false;
        thread.interrupt();
    }
}
