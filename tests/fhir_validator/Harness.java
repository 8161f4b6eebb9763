// HL7's FHIR validator (HAPI's FhirInstanceValidator, R4) over many JSON files in one JVM.
//
//     java -cp '<jars>/*' tests/fhir_validator/Harness.java [--definitions DIR] <file or dir>...
//
// --definitions: conformance resources (StructureDefinitions, as JSON) the validator cannot
// download offline, added to its support chain before R4's own: definitions/ beside this file
// holds the R5 cross-version extension rcmflow's Account uses (docs/fhir-conformance.md).
//
// Source-file mode (Java 11+): nothing is compiled ahead. Offline: no terminology server, no
// package download. The validation support chain knows R4's own definitions
// (hapi-fhir-validation-resources-r4), the common code systems (UCUM, languages, currencies,
// ...), the value sets it can expand in memory, and makes snapshots of profiles that lack one.
// A code from a code system it does not know (rcmflow's own, X12's CARC codes) is then a
// warning or information, never an error. Prints one JSON document on stdout:
//
//     {"files": [{"file": ..., "resourceType": ..., "issues": [
//         {"severity": "error"|"warning"|"information"|"fatal", "location": ..., "line": n,
//          "messageId": ..., "message": ...}]}],
//      "seconds": {"start": s, "validate": s}}
//
// Exit 0 when every file was read and validated (whatever it found), 2 on a usage or I/O
// problem: the Python test reads the verdict from the report, not the exit code.

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class Harness {
    public static void main(String[] args) throws IOException {
        if (args.length == 0) {
            System.err.println("usage: java -cp '<jars>/*' Harness.java <file or dir>...");
            System.exit(2);
        }
        List<Path> files = new ArrayList<>();
        List<Path> definitions = new ArrayList<>();
        for (int a = 0; a < args.length; a++) {
            if (args[a].equals("--definitions") && a + 1 < args.length) {
                try (Stream<Path> listed = Files.list(Path.of(args[++a]))) {
                    listed.filter(p -> p.toString().endsWith(".json")).sorted()
                          .forEach(definitions::add);
                }
                continue;
            }
            Path path = Path.of(args[a]);
            if (Files.isDirectory(path)) {
                try (Stream<Path> listed = Files.list(path)) {
                    listed.filter(p -> p.toString().endsWith(".json")).sorted()
                          .forEach(files::add);
                }
            } else {
                files.add(path);
            }
        }
        long started = System.nanoTime();
        FhirContext context = FhirContext.forR4();
        PrePopulatedValidationSupport extra = new PrePopulatedValidationSupport(context);
        for (Path definition : definitions) {
            extra.addResource(context.newJsonParser().parseResource(
                Files.readString(definition, StandardCharsets.UTF_8)));
        }
        ValidationSupportChain chain = new ValidationSupportChain(
            extra,
            new DefaultProfileValidationSupport(context),
            new CommonCodeSystemsTerminologyService(context),
            new InMemoryTerminologyServerValidationSupport(context),
            new SnapshotGeneratingValidationSupport(context));
        FhirInstanceValidator instanceValidator = new FhirInstanceValidator(chain);
        FhirValidator validator = context.newValidator();
        validator.registerValidatorModule(instanceValidator);
        // The first validation loads R4's definitions: counted as start, not per file.
        validator.validateWithResult("{\"resourceType\":\"Basic\",\"code\":{\"text\":\"warm\"}}");
        long warmed = System.nanoTime();

        StringBuilder out = new StringBuilder("{\"files\":[");
        for (int n = 0; n < files.size(); n++) {
            Path file = files.get(n);
            String text = Files.readString(file, StandardCharsets.UTF_8);
            ValidationResult result = validator.validateWithResult(text);
            if (n > 0) out.append(',');
            out.append("\n{\"file\":").append(quote(file.getFileName().toString()))
               .append(",\"issues\":[");
            boolean first = true;
            for (SingleValidationMessage m : result.getMessages()) {
                if (!first) out.append(',');
                first = false;
                out.append("\n  {\"severity\":").append(quote(severity(m.getSeverity())))
                   .append(",\"location\":").append(quote(m.getLocationString()))
                   .append(",\"line\":").append(m.getLocationLine() == null ? "null"
                                                : m.getLocationLine().toString())
                   .append(",\"messageId\":").append(quote(m.getMessageId()))
                   .append(",\"message\":").append(quote(m.getMessage())).append('}');
            }
            out.append("]}");
        }
        long done = System.nanoTime();
        out.append("\n],\"seconds\":{\"start\":").append(String.format("%.3f", (warmed - started) / 1e9))
           .append(",\"validate\":").append(String.format("%.3f", (done - warmed) / 1e9))
           .append("}}\n");
        System.out.print(out);
        System.out.flush();
    }

    private static String severity(ResultSeverityEnum severity) {
        return severity == null ? "unknown" : severity.getCode();
    }

    private static String quote(String value) {
        if (value == null) return "null";
        StringBuilder s = new StringBuilder("\"");
        for (char c : value.toCharArray()) {
            switch (c) {
                case '"' -> s.append("\\\"");
                case '\\' -> s.append("\\\\");
                case '\n' -> s.append("\\n");
                case '\r' -> s.append("\\r");
                case '\t' -> s.append("\\t");
                default -> {
                    if (c < 0x20) s.append(String.format("\\u%04x", (int) c));
                    else s.append(c);
                }
            }
        }
        return s.append('"').toString();
    }
}
