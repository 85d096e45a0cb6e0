package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;

class ExpectationTest {

    @Test
    void parses() {
        assertEquals(new Expectation(true, 0), Expectation.parse("identical"));
        assertEquals(new Expectation(false, 1e-3), Expectation.parse("close:1e-3"));
        assertEquals("close:0.001", Expectation.parse("CLOSE:0.001").toString());
        for (String bad : new String[] {"close", "close:", "close:-1", "close:x", "same", "close:NaN"}) {
            InvalidInputException e = assertThrows(InvalidInputException.class, () -> Expectation.parse(bad), bad);
            assertTrue(e.getMessage().startsWith("--expect: not a gate; expected identical or close:TOL"), bad);
        }
    }

    @Test
    void closeComparesTheRelativeErrorOfEveryOutput() {
        OutputComparison c = new OutputComparison("logits");
        c.accept(
                new RuntimeModel.Output("logits", new long[] {2}, new float[] {10, 1}),
                new RuntimeModel.Output("logits", new long[] {2}, new float[] {10, 1.01f}));
        List<OutputComparison.Result> r = List.of(c.result());
        assertTrue(Expectation.parse("close:1e-3").check(r).passed());
        Expectation.Verdict v = Expectation.parse("close:1e-4").check(r);
        assertFalse(v.passed());
        assertTrue(v.reason().startsWith("output 'logits': relative error 0.00100 exceeds close:0.0001"), v.reason());
        assertFalse(Expectation.parse("identical").check(r).passed());
    }
}
