package dev.clickrec.delta.storage;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.util.Iterator;

import io.delta.storage.HadoopFileSystemLogStore;
import io.delta.storage.S3SingleDriverLogStore;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Options;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.StreamCapabilities;

/**
 * A Delta {@link io.delta.storage.LogStore} for {@code s3a://} tables whose commit is a
 * put-if-absent: safe with any number of writers, on any number of machines.
 *
 * <h2>Why</h2>
 * Delta commits version N of a table by creating {@code _delta_log/<N>.json}, and relies on that
 * creation failing with {@link FileAlreadyExistsException} when another writer created it first:
 * {@code OptimisticTransaction} then reads the winner's commit, checks for a logical conflict and
 * retries at N+1 or reports the conflict. Delta's {@link S3SingleDriverLogStore} checks whether the
 * object exists and then PUTs it; the check and the PUT are two requests, so two writers can both
 * see "absent" and both PUT, and the later PUT silently replaces the earlier commit (its rows are
 * gone from the table, with no error anywhere). Its in-JVM lock only covers writers in one driver.
 *
 * <p>Here the commit is a single PUT carrying {@code If-None-Match: *}: S3 (and MinIO) create the
 * object only if no object has that key, atomically, and otherwise answer 412 Precondition Failed
 * (409 ConditionalRequestConflict when another conditional PUT of the same key is in flight). That
 * answer becomes {@link FileAlreadyExistsException}, which is exactly what Delta's other log stores
 * throw for a lost race. Hadoop's S3A sends the header for a create built with the mandatory option
 * {@value #CONDITIONAL_CREATE} (S3A must have {@code fs.s3a.create.conditional.enabled}, on by
 * default); with it S3A also skips its own existence probes, so the PUT is the only check.
 *
 * <h2>What it does not do</h2>
 * <ul>
 *   <li>It never falls back to an unconditional PUT: on a filesystem that does not declare the
 *       conditional create capability a commit fails with an {@link IOException} that names the
 *       path and the alternative ({@code s3.commit: single_writer}, Delta's single-writer store),
 *       since a silent fallback would bring back the lost-commit race unnoticed.</li>
 *   <li>It cannot tell a store that ignores {@code If-None-Match} (an old S3-compatible server)
 *       from one that honours it: S3A's capability says what the client sends, not what the
 *       server checks. AWS S3 and current MinIO honour it.</li>
 *   <li>A 409 is reported as "already exists" although the other conditional PUT may still fail;
 *       Delta then finds no commit N, checks nothing and retries at N, which is the retry S3
 *       asks for.</li>
 * </ul>
 *
 * <p>{@code write(..., overwrite=true)} (Delta's {@code _last_checkpoint} and the like) is a plain
 * overwriting create. A PUT is atomic, so a partial write is never visible
 * ({@link #isPartialWriteVisible} is false); a write whose actions fail part-way is aborted, not
 * closed, so nothing is uploaded. Reading and listing are Delta's: {@code read} and
 * {@code resolvePathOnPhysicalStorage} from {@link HadoopFileSystemLogStore}, {@code listFrom}
 * delegated to {@link S3SingleDriverLogStore} (same paths, same opt-in
 * {@code delta.enableFastS3AListFrom}; it keeps no per-driver cache of written files, and a
 * conditional PUT is read-after-write consistent on S3 and MinIO, so none is needed).
 */
public class S3ConditionalPutLogStore extends HadoopFileSystemLogStore {

    /** Hadoop's create option (and path capability) for put-if-absent: {@value}. */
    public static final String CONDITIONAL_CREATE =
        Options.CreateFileOptionKeys.FS_OPTION_CREATE_CONDITIONAL_OVERWRITE;

    private final S3SingleDriverLogStore listing;

    public S3ConditionalPutLogStore(Configuration hadoopConf) {
        super(hadoopConf);
        this.listing = new S3SingleDriverLogStore(hadoopConf);
    }

    @Override
    public void write(
            Path path,
            Iterator<String> actions,
            Boolean overwrite,
            Configuration hadoopConf) throws IOException {
        final FileSystem fs = path.getFileSystem(hadoopConf);
        final Path target = fs.makeQualified(path);
        if (overwrite) {
            writeLines(fs.create(target, true), actions);
            return;
        }
        if (!fs.hasPathCapability(target, CONDITIONAL_CREATE)) {
            throw new IOException(String.format(
                "cannot commit %s with a conditional PUT: %s does not support %s (for s3a, set "
                    + "fs.s3a.create.conditional.enabled=true and use a store that honours "
                    + "If-None-Match). Nothing was written: an unconditional write could silently "
                    + "replace another writer's commit. For a store without conditional writes, "
                    + "set s3.commit: single_writer (Delta's S3SingleDriverLogStore: one writer "
                    + "at a time only).",
                path, fs.getClass().getName(), CONDITIONAL_CREATE));
        }
        try {
            // FileSystem.createFile() returns a raw builder type, hence the cast.
            final FSDataOutputStream out = (FSDataOutputStream) fs.createFile(target)
                .overwrite(false)
                .must(CONDITIONAL_CREATE, true)
                .build();
            writeLines(out, actions);
        } catch (IOException e) {
            if (PreconditionFailures.isAlreadyExists(e)) {
                final FileAlreadyExistsException exists = new FileAlreadyExistsException(path.toString());
                exists.initCause(e);
                throw exists;
            }
            throw e;
        }
    }

    /**
     * Write each action and a newline, as Delta's own log stores do, then close: for S3A the
     * close is the PUT. When the actions (or a write) fail, the stream is aborted instead, so
     * no partial file is uploaded; a stream that cannot abort is closed.
     */
    private static void writeLines(FSDataOutputStream out, Iterator<String> actions)
            throws IOException {
        try {
            while (actions.hasNext()) {
                out.write((actions.next() + "\n").getBytes(StandardCharsets.UTF_8));
            }
        } catch (IOException | RuntimeException | Error e) {
            discard(out, e);
            throw e;
        }
        out.close();
    }

    private static void discard(FSDataOutputStream out, Throwable failure) {
        try {
            if (out.hasCapability(StreamCapabilities.ABORTABLE_STREAM)) {
                out.abort();
            } else {
                out.close();
            }
        } catch (IOException | RuntimeException e) {
            failure.addSuppressed(e);
        }
    }

    @Override
    public Iterator<FileStatus> listFrom(Path path, Configuration hadoopConf) throws IOException {
        return listing.listFrom(path, hadoopConf);
    }

    @Override
    public Boolean isPartialWriteVisible(Path path, Configuration hadoopConf) {
        return false;
    }
}
