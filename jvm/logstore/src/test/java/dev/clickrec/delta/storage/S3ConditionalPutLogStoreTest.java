package dev.clickrec.delta.storage;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.util.Iterator;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.s3a.AWSBadRequestException;
import org.apache.hadoop.fs.s3a.AWSStatus500Exception;
import org.apache.hadoop.fs.s3a.RemoteFileChangedException;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import software.amazon.awssdk.awscore.exception.AwsErrorDetails;
import software.amazon.awssdk.services.s3.model.S3Exception;

class S3ConditionalPutLogStoreTest {

    private static final Path COMMIT =
        new Path(FakeObjectStore.SCHEME + "://bucket/t/_delta_log/00000000000000000000.json");

    private Configuration conf;
    private S3ConditionalPutLogStore store;

    @BeforeEach
    void setUp() {
        FakeObjectStore.reset();
        conf = new Configuration(false);
        conf.set("fs." + FakeObjectStore.SCHEME + ".impl", FakeObjectStore.class.getName());
        conf.setBoolean("fs." + FakeObjectStore.SCHEME + ".impl.disable.cache", true);
        store = new S3ConditionalPutLogStore(conf);
    }

    // --- the S3 answers, as S3A 3.5 raises them ------------------------------------------------

    private static S3Exception s3Error(int status, String code) {
        return (S3Exception) S3Exception.builder()
            .statusCode(status)
            .message(code)
            .awsErrorDetails(AwsErrorDetails.builder().errorCode(code).build())
            .build();
    }

    /** S3AUtils.translateException: 412 -> RemoteFileChangedException. */
    private static IOException preconditionFailed() {
        return new RemoteFileChangedException(COMMIT.toString(), "PUT", "At least one of the "
            + "pre-conditions you specified did not hold", s3Error(412, "PreconditionFailed"));
    }

    /** S3AUtils.translateException: 409 -> AWSBadRequestException. */
    private static IOException conditionalRequestConflict() {
        return new AWSBadRequestException("PUT", s3Error(409, "ConditionalRequestConflict"));
    }

    private static Iterator<String> actions(String... lines) {
        return List.of(lines).iterator();
    }

    // --- classification -------------------------------------------------------------------------

    @Test
    void preconditionFailuresMeanAlreadyExists() {
        assertTrue(PreconditionFailures.isAlreadyExists(preconditionFailed()));
        assertTrue(PreconditionFailures.isAlreadyExists(conditionalRequestConflict()));
        assertTrue(PreconditionFailures.isAlreadyExists(
            new org.apache.hadoop.fs.FileAlreadyExistsException(COMMIT + " already exists")));
        // S3 Express: status 200 with the error code
        assertTrue(PreconditionFailures.isAlreadyExists(
            new RemoteFileChangedException(COMMIT.toString(), "PUT", "x", s3Error(200, "PreconditionFailed"))));
    }

    @Test
    void otherFailuresAreNotAlreadyExists() {
        AccessDeniedException denied = new AccessDeniedException(COMMIT.toString(), null, "AccessDenied");
        denied.initCause(s3Error(403, "AccessDenied"));
        assertFalse(PreconditionFailures.isAlreadyExists(denied));
        assertFalse(PreconditionFailures.isAlreadyExists(
            new AWSStatus500Exception("PUT", s3Error(500, "InternalError"))));
        assertFalse(PreconditionFailures.isAlreadyExists(
            new AWSBadRequestException("PUT", s3Error(400, "InvalidRequest"))));
        assertFalse(PreconditionFailures.isAlreadyExists(new IOException("connection reset")));
        // a RemoteFileChangedException is not enough by itself (a changed object on read)
        assertFalse(PreconditionFailures.isAlreadyExists(
            new RemoteFileChangedException(COMMIT.toString(), "open", "etag changed")));
    }

    // --- write(overwrite=false): the conditional create --------------------------------------

    @Test
    void commitIsAConditionalCreateOfTheLines() throws IOException {
        store.write(COMMIT, actions("{\"a\":1}", "{\"b\":2}"), false, conf);
        assertEquals("{\"a\":1}\n{\"b\":2}\n", FakeObjectStore.OBJECTS.get(COMMIT.toString()));
        assertTrue(FakeObjectStore.lastMandatoryKeys.contains(S3ConditionalPutLogStore.CONDITIONAL_CREATE));
        assertFalse(FakeObjectStore.lastFlags.contains(CreateFlag.OVERWRITE));
    }

    @Test
    void preconditionFailedBecomesFileAlreadyExists() {
        for (IOException answer : List.of(preconditionFailed(), conditionalRequestConflict())) {
            FakeObjectStore.failOnClose = answer;
            FileAlreadyExistsException e = assertThrows(FileAlreadyExistsException.class,
                () -> store.write(COMMIT, actions("{}"), false, conf));
            assertEquals(COMMIT.toString(), e.getFile());
            assertSame(answer, e.getCause());
        }
    }

    @Test
    void otherFailuresPropagateUnchanged() {
        AccessDeniedException denied = new AccessDeniedException(COMMIT.toString(), null, "AccessDenied");
        denied.initCause(s3Error(403, "AccessDenied"));
        List<IOException> answers = List.of(denied,
            new AWSStatus500Exception("PUT", s3Error(500, "InternalError")),
            new IOException("connection reset"));
        for (IOException answer : answers) {
            FakeObjectStore.failOnClose = answer;
            IOException e = assertThrows(IOException.class, () -> store.write(COMMIT, actions("{}"), false, conf));
            assertSame(answer, e);
        }
    }

    @Test
    void failingActionsAbortTheUploadInsteadOfClosingIt() {
        Iterator<String> failing = new Iterator<>() {
            private int n;

            @Override
            public boolean hasNext() {
                return true;
            }

            @Override
            public String next() {
                if (n++ == 1) {
                    throw new IllegalStateException("action 2 failed");
                }
                return "{}";
            }
        };
        assertThrows(IllegalStateException.class, () -> store.write(COMMIT, failing, false, conf));
        assertTrue(FakeObjectStore.aborted);
        assertNull(FakeObjectStore.OBJECTS.get(COMMIT.toString()));
    }

    @Test
    void noConditionalCreateMeansNoCommit(@TempDir java.nio.file.Path dir) {
        Path commit = new Path(dir.toUri().toString(), "_delta_log/00000000000000000000.json");
        IOException e = assertThrows(IOException.class,
            () -> store.write(commit, actions("{}"), false, new Configuration(false)));
        assertTrue(e.getMessage().contains(commit.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("s3.commit: single_writer"), e.getMessage());
        assertFalse(Files.exists(dir.resolve("_delta_log")));
    }

    // --- write(overwrite=true): a plain create ------------------------------------------------

    @Test
    void overwriteWritesTheLinesOnALocalFilesystem(@TempDir java.nio.file.Path dir) throws IOException {
        Path target = new Path(dir.toUri().toString(), "_delta_log/_last_checkpoint");
        Configuration local = new Configuration(false);
        store.write(target, actions("{\"version\":1}", "x"), true, local);
        java.nio.file.Path file = dir.resolve("_delta_log/_last_checkpoint");
        assertEquals("{\"version\":1}\nx\n", Files.readString(file, StandardCharsets.UTF_8));
        store.write(target, actions("{\"version\":2}"), true, local);
        assertEquals("{\"version\":2}\n", Files.readString(file, StandardCharsets.UTF_8));
    }

    @Test
    void aPutIsNeverPartiallyVisible() {
        assertFalse(store.isPartialWriteVisible(COMMIT, conf));
    }
}
