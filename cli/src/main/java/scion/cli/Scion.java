package scion.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;
import scion.io.AtomicOutput;
import scion.io.InvalidInputException;
import scion.io.ResourceException;
import scion.io.UnavailableException;

/** The {@code scion} command line: grow, compress, merge, inspect and convert transformer checkpoints. */
@Command(
        name = "scion",
        mixinStandardHelpOptions = true,
        versionProvider = Scion.Version.class,
        description = "Grow, compress and merge transformer checkpoints (safetensors folders and ONNX files).",
        subcommands = {
            InspectCommand.class,
            ConvertCommand.class,
            GrowCommand.class,
            PruneCommand.class,
            SubcloneCommand.class,
            LowRankCommand.class,
            ExportCommand.class,
            DemoCommand.class,
            MergeCommand.class,
            ValidateCommand.class,
            EvalCommand.class
        },
        footer = {
            "",
            "Exit codes: 0 ok, 1 internal error, 2 usage error, 3 invalid input,",
            "4 check failed, 5 unavailable, 6 out of memory, disk space or write access",
            "(or another run is writing OUT)."
        })
public final class Scion implements Runnable {

    @Option(
            names = "--verbose",
            scope = ScopeType.INHERIT,
            description = "Print stack traces and extra detail on errors.")
    boolean verbose;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** The version string, also written into provenance metadata. */
    public static String version() {
        String v = Scion.class.getPackage().getImplementationVersion();
        return v != null ? v : "0.1.0-SNAPSHOT";
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"scion " + version()};
        }
    }

    /** Builds the command line with Scion's error handling; tests call this instead of {@link #main}. */
    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Scion());
        cl.setExecutionStrategy(parsed -> {
            // Notes from io (a stale staging area removed) go to this command line's stderr, as "scion: <note>".
            Consumer<String> previous = AtomicOutput.notes(note -> {
                cl.getErr().println("scion: " + note);
                cl.getErr().flush();
            });
            try {
                return new CommandLine.RunLast().execute(parsed);
            } catch (OutOfMemoryError e) {
                throw new CommandLine.ExecutionException(cl, "out of memory", e);
            } finally {
                AtomicOutput.notes(previous);
            }
        });
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            boolean verbose = parsed.matchedOption("--verbose") != null
                    || parsed.subcommand() != null && hasVerbose(parsed.subcommand());
            PrintWriter err = cmd.getErr();
            int code;
            String resource = resourceProblem(ex);
            if (causeOf(ex, OutOfMemoryError.class) != null) {
                code = ExitCodes.RESOURCE;
                err.println(outOfMemory(commandName(parsed), causeOf(ex, OutOfMemoryError.class)));
            } else if (ex instanceof InvalidInputException) {
                code = ExitCodes.INVALID_INPUT;
                err.println("scion: " + ex.getMessage());
            } else if (ex instanceof UnavailableException) {
                code = ExitCodes.UNAVAILABLE;
                err.println("scion: " + ex.getMessage());
            } else if (ex instanceof ResourceException) {
                code = ExitCodes.RESOURCE;
                err.println("scion: " + ex.getMessage());
            } else if (resource != null) {
                code = ExitCodes.RESOURCE;
                err.println("scion: " + ex.getMessage() + ": " + resource);
            } else if (ex instanceof UncheckedIOException) {
                code = ExitCodes.INTERNAL;
                err.println("scion: " + ex.getMessage() + ": " + ex.getCause().getMessage());
            } else {
                code = ExitCodes.INTERNAL;
                err.println("scion: internal error: " + ex + (verbose ? "" : " (run with --verbose for details)"));
            }
            if (verbose) {
                ex.printStackTrace(err);
            }
            err.flush();
            return code;
        });
        return cl;
    }

    /** The one line for an {@code OutOfMemoryError}, naming the command, the heap and the two ways out. */
    static String outOfMemory(String command, OutOfMemoryError e) {
        return String.format(
                Locale.ROOT,
                "scion%s: out of memory (%s) with a heap of %d MiB; hint: SCION_JAVA_OPTS=-Xmx<more> (e.g. -Xmx%dg)"
                        + " or --threads 1",
                command.isEmpty() ? "" : " " + command,
                e.getMessage() == null ? "OutOfMemoryError" : e.getMessage(),
                Runtime.getRuntime().maxMemory() >> 20,
                Math.max(2, 2 * ((Runtime.getRuntime().maxMemory() >> 30) + 1)));
    }

    private static String commandName(CommandLine.ParseResult pr) {
        StringBuilder sb = new StringBuilder();
        for (CommandLine.ParseResult p = pr.subcommand(); p != null; p = p.subcommand()) {
            sb.append(sb.length() == 0 ? "" : " ").append(p.commandSpec().name());
        }
        return sb.toString();
    }

    private static <T extends Throwable> T causeOf(Throwable t, Class<T> type) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (type.isInstance(c)) {
                return type.cast(c);
            }
        }
        return null;
    }

    /**
     * What the machine refused, when an I/O failure is one (disk full, permission denied, read-only file system), as
     * the operating system words it; {@code null} for any other failure. Java reports these only as messages.
     */
    static String resourceProblem(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof AccessDeniedException) {
                return "permission denied";
            }
            if (c instanceof IOException) {
                String m = c instanceof FileSystemException ? ((FileSystemException) c).getReason() : c.getMessage();
                if (m != null) {
                    for (String known : RESOURCE_MESSAGES) {
                        if (m.contains(known)) {
                            return known.toLowerCase(Locale.ROOT);
                        }
                    }
                }
            }
        }
        return null;
    }

    private static final List<String> RESOURCE_MESSAGES = List.of(
            "No space left on device",
            "Disk quota exceeded",
            "Read-only file system",
            "Permission denied",
            "Operation not permitted",
            "File too large");

    private static boolean hasVerbose(CommandLine.ParseResult pr) {
        if (pr.matchedOption("--verbose") != null) {
            return true;
        }
        return pr.subcommand() != null && hasVerbose(pr.subcommand());
    }

    public static void main(String[] args) {
        // Out of memory on a thread of its own (not through a Future) is one line too, never a JVM trace.
        Thread.setDefaultUncaughtExceptionHandler((thread, e) -> {
            if (e instanceof OutOfMemoryError) {
                System.err.println(outOfMemory(args.length > 0 ? args[0] : "", (OutOfMemoryError) e));
            } else {
                System.err.print("Exception in thread \"" + thread.getName() + "\" ");
                e.printStackTrace(System.err);
            }
        });
        int code;
        try {
            code = commandLine().execute(args);
        } catch (OutOfMemoryError e) {
            System.err.println(outOfMemory(args.length > 0 ? args[0] : "", e));
            code = ExitCodes.RESOURCE;
        }
        System.exit(code);
    }
}
