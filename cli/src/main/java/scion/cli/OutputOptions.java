package scion.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import java.io.PrintWriter;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import picocli.CommandLine.Option;
import scion.io.Json;

/**
 * The options every command that writes a model shares ({@code --force}, {@code --json}) and the way it prints its
 * summary: one JSON object, or one {@code key  value} line per entry (a list value gives one line per item).
 */
final class OutputOptions {
    @Option(names = "--force", description = "Replace OUT if it exists (only once the new output is complete).")
    boolean force;

    @Option(names = "--json", description = "Print a JSON summary instead of text.")
    boolean json;

    /** Prints {@code summary} as JSON or as text with keys padded to {@code keyWidth}. */
    void print(Map<String, Object> summary, PrintWriter out, int keyWidth) throws JsonProcessingException {
        if (json) {
            out.println(Json.mapper().writeValueAsString(summary));
        } else {
            String format = "  %-" + keyWidth + "s %s%n";
            for (Map.Entry<String, Object> e : summary.entrySet()) {
                List<?> lines = e.getValue() instanceof List ? (List<?>) e.getValue() : List.of(e.getValue());
                for (Object line : lines) {
                    out.printf(Locale.ROOT, format, e.getKey(), line);
                }
            }
        }
        out.flush();
    }
}
