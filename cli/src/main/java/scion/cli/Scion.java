package scion.cli;

import java.io.PrintWriter;
import java.io.UncheckedIOException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;
import scion.io.InvalidInputException;
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
            "Exit codes: 0 ok, 1 internal error, 2 usage error, 3 invalid input, 4 check failed, 5 unavailable."
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
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            boolean verbose = parsed.matchedOption("--verbose") != null
                    || parsed.subcommand() != null && hasVerbose(parsed.subcommand());
            PrintWriter err = cmd.getErr();
            int code;
            if (ex instanceof InvalidInputException) {
                code = ExitCodes.INVALID_INPUT;
                err.println("scion: " + ex.getMessage());
            } else if (ex instanceof UnavailableException) {
                code = ExitCodes.UNAVAILABLE;
                err.println("scion: " + ex.getMessage());
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

    private static boolean hasVerbose(CommandLine.ParseResult pr) {
        if (pr.matchedOption("--verbose") != null) {
            return true;
        }
        return pr.subcommand() != null && hasVerbose(pr.subcommand());
    }

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }
}
