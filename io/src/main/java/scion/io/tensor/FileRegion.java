package scion.io.tensor;

import java.nio.channels.FileChannel;
import java.nio.file.Path;

/** A byte range of an open file: {@code [offset, offset + length)} of {@code channel}, which reads {@code path}. */
public record FileRegion(Path path, FileChannel channel, long offset, long length) {}
