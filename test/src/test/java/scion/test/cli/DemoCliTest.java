package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** {@code scion demo}, the README's first command, runs end to end on the real MiniLM. */
class DemoCliTest {
    @Test
    void demoInspectsConvertsAndValidates() {
        CliRun r = CliRun.of("demo");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("102 of 102 tensors assigned a role"), r.out());
        assertTrue(r.out().contains("retyped_initializers   101"), r.out());
        assertTrue(r.out().contains("gate       close:0.005: passed"), r.out());
    }
}
