package scion.merge;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import scion.io.HubCache;
import scion.io.InvalidInputException;

/**
 * A merge recipe of one or more stages: a YAML file of one document (a plain mergekit config) or of several documents
 * separated by {@code ---}, as mergekit-multi runs them (mergekit's {@code docs/multimerge.md}).
 *
 * <p>Rules, as mergekit-multi's: every document is a merge config plus an optional {@code name}; names are unique and
 * at most one document is unnamed. A model reference ({@link MergeConfig#references()}) equal to a stage's name means
 * that stage's output. Stages run in dependency order (a stage after the stages it names; otherwise in document
 * order); a cycle is refused. The final stage — whose output is the command's output — is the unnamed document, or,
 * when every document is named, the one stage no other stage uses. Where mergekit-multi writes every named stage into
 * an {@code --intermediate-dir} and keeps it, Scion writes them into a staging area it removes at the end, so a stage
 * the final one does not depend on would be computed and thrown away: it is refused, as are references that name
 * neither a stage nor a model (a path, or a hub model in the local cache) — all before anything runs.
 *
 * @param stages the stages in run order; the last one is the final stage
 * @param where the file, for messages
 */
public record MergeStages(List<Stage> stages, Path where) {

    /**
     * One stage.
     *
     * @param name its {@code name}, or null for the unnamed (final) document
     * @param document its 1-based position in the file
     * @param config the merge config as written (references to stages by name)
     */
    public record Stage(String name, int document, MergeConfig config) {
        /** For messages and progress: {@code 'first-merge'}, or {@code final merge}. */
        public String label() {
            return name == null ? "final merge" : "'" + name + "'";
        }
    }

    /** Reads a YAML file of one or more documents. */
    public static MergeStages read(Path file) {
        return parse(MergeConfig.readText(file), file);
    }

    /** Parses YAML text of one or more documents; {@code where} names it (and anchors relative model paths). */
    public static MergeStages parse(String yaml, Path where) {
        String w = where == null ? "config" : where.getFileName().toString();
        List<JsonNode> docs = MergeConfig.documents(yaml, w);
        if (docs.isEmpty()) {
            throw InvalidInputException.of(w, "no YAML document", "a mergekit config", "an empty file");
        }
        if (docs.size() == 1) {
            JsonNode d = docs.get(0);
            String name = d.isObject() && d.hasNonNull("name") ? d.get("name").asText() : null;
            return new MergeStages(List.of(new Stage(name, 1, MergeConfig.of(d, w, where))), where);
        }
        List<Stage> all = new ArrayList<>();
        Map<String, Stage> byName = new LinkedHashMap<>();
        Stage unnamed = null;
        for (int i = 0; i < docs.size(); i++) {
            JsonNode d = docs.get(i);
            String wd = w + " (document " + (i + 1) + ")";
            JsonNode n = d.isObject() ? d.get("name") : null;
            String name = null;
            if (n != null && !n.isNull()) {
                if (!n.isValueNode() || n.asText().isBlank()) {
                    throw InvalidInputException.of(wd + ": name", "not a stage name", "a non-empty string", n);
                }
                name = n.asText();
            }
            Stage s = new Stage(name, i + 1, MergeConfig.of(d, wd, where));
            if (name == null) {
                if (unnamed != null) {
                    throw InvalidInputException.of(
                            wd,
                            "a second document without 'name'",
                            "at most one unnamed (final) document; give the others a name",
                            "documents " + unnamed.document() + " and " + (i + 1) + " unnamed");
                }
                unnamed = s;
            } else if (byName.containsKey(name)) {
                throw InvalidInputException.of(
                        wd + ": name",
                        "duplicate stage name",
                        "unique names",
                        "'" + name + "' also in document " + byName.get(name).document());
            } else {
                byName.put(name, s);
            }
            all.add(s);
        }
        // dependencies, with every reference checked before anything runs
        Map<Stage, Set<String>> deps = new LinkedHashMap<>();
        Set<String> used = new LinkedHashSet<>();
        for (Stage s : all) {
            Set<String> d = new LinkedHashSet<>();
            for (Map.Entry<String, String> r : s.config().references().entrySet()) {
                String ref = r.getValue();
                if (byName.containsKey(ref)) {
                    if (ref.equals(s.name())) {
                        throw InvalidInputException.of(
                                w + ": stage " + s.label() + " " + r.getKey(),
                                "a stage cannot use its own output",
                                "an earlier stage or a model",
                                "'" + ref + "'");
                    }
                    d.add(ref);
                    used.add(ref);
                } else if (!Files.exists(s.config().resolve(ref))
                        && HubCache.find(ref).isEmpty()) {
                    String hint = HubCache.parse(ref)
                            .map(h -> "; hint: if it is a hub model, fetch it first with: " + h.downloadCommand())
                            .orElse("");
                    throw new InvalidInputException(w + ": stage " + s.label() + " " + r.getKey() + ": '" + ref
                            + "' names no stage and no model; expected one of the stages " + byName.keySet()
                            + ", a model path or a hub model in the local cache, found '" + ref + "'" + hint);
                }
            }
            deps.put(s, d);
        }
        Stage last;
        if (unnamed != null) {
            last = unnamed;
        } else {
            List<Stage> sinks = new ArrayList<>();
            for (Stage s : all) {
                if (!used.contains(s.name())) {
                    sinks.add(s);
                }
            }
            if (sinks.size() != 1) {
                throw InvalidInputException.of(
                        w,
                        "no single final stage",
                        "one unnamed document, or one stage no other stage uses",
                        sinks.size() + " stages no other stage uses: " + labels(sinks));
            }
            last = sinks.get(0);
        }
        // the final stage and everything it needs, transitively
        Set<String> needed = new LinkedHashSet<>();
        List<String> todo = new ArrayList<>(deps.get(last));
        while (!todo.isEmpty()) {
            String n = todo.remove(todo.size() - 1);
            if (needed.add(n)) {
                todo.addAll(deps.get(byName.get(n)));
            }
        }
        for (Stage s : all) {
            if (s != last && !needed.contains(s.name())) {
                throw InvalidInputException.of(
                        w + ": stage " + s.label(),
                        "not used by the final stage " + last.label() + " (its output would be thrown away)",
                        "every named stage feeding the final one; merge it on its own or remove it",
                        "a stage nothing uses");
            }
        }
        // run order: repeatedly the first stage (in document order) whose stages have all run
        List<Stage> order = new ArrayList<>();
        Set<String> done = new LinkedHashSet<>();
        while (order.size() < all.size()) {
            Stage next = null;
            for (Stage s : all) {
                if (!order.contains(s) && done.containsAll(deps.get(s))) {
                    next = s;
                    break;
                }
            }
            if (next == null) {
                List<Stage> left = new ArrayList<>(all);
                left.removeAll(order);
                throw InvalidInputException.of(
                        w, "the stages use each other in a cycle", "stages that can run in some order", labels(left));
            }
            order.add(next);
            if (next.name() != null) {
                done.add(next.name());
            }
        }
        // every other stage feeds the final one, so it runs last
        return new MergeStages(List.copyOf(order), where);
    }

    /** Whether the recipe has more than one stage. */
    public boolean multiStage() {
        return stages.size() > 1;
    }

    /** The final stage (its output is the command's output). */
    public Stage last() {
        return stages.get(stages.size() - 1);
    }

    /**
     * The config of {@code stage} with references to earlier stages replaced by the paths their outputs were written
     * to ({@code outputs}: stage name → path).
     */
    public static MergeConfig bind(Stage stage, Map<String, Path> outputs) {
        return stage.config()
                .withReferences(r -> outputs.containsKey(r) ? outputs.get(r).toString() : r);
    }

    private static String labels(List<Stage> l) {
        List<String> out = new ArrayList<>();
        for (Stage s : l) {
            out.add(s.label());
        }
        return String.join(", ", out);
    }
}
