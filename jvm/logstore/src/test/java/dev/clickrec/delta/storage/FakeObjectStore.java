package dev.clickrec.delta.storage;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.util.EnumSet;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.hadoop.fs.Abortable;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSDataOutputStreamBuilder;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.StreamCapabilities;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.util.Progressable;

/**
 * A filesystem for the {@code fakes3} scheme that behaves like S3A's conditional create where the
 * unit tests need it: it declares the capability, uploads on close, can abort, and its close can
 * be made to fail with a given exception (the store's answer). Objects and calls are recorded in
 * static fields, reset by {@link #reset()}.
 */
public class FakeObjectStore extends FileSystem {

    static final String SCHEME = "fakes3";

    static final ConcurrentHashMap<String, String> OBJECTS = new ConcurrentHashMap<>();
    static volatile IOException failOnClose;
    static volatile Set<String> lastMandatoryKeys;
    static volatile EnumSet<CreateFlag> lastFlags;
    static volatile boolean aborted;

    static void reset() {
        OBJECTS.clear();
        failOnClose = null;
        lastMandatoryKeys = null;
        lastFlags = null;
        aborted = false;
    }

    private URI uri;

    @Override
    public void initialize(URI name, org.apache.hadoop.conf.Configuration conf) throws IOException {
        super.initialize(name, conf);
        uri = URI.create(name.getScheme() + "://" + name.getAuthority());
    }

    @Override
    public String getScheme() {
        return SCHEME;
    }

    @Override
    public URI getUri() {
        return uri;
    }

    @Override
    public boolean hasPathCapability(Path path, String capability) throws IOException {
        return S3ConditionalPutLogStore.CONDITIONAL_CREATE.equals(capability)
            || super.hasPathCapability(path, capability);
    }

    @Override
    public FSDataOutputStreamBuilder createFile(Path path) {
        return new Builder(this, path);
    }

    private static final class Builder extends FSDataOutputStreamBuilder<FSDataOutputStream, Builder> {
        Builder(FileSystem fs, Path path) {
            super(fs, path);
            create();
        }

        @Override
        public Builder getThisBuilder() {
            return this;
        }

        @Override
        public FSDataOutputStream build() {
            lastMandatoryKeys = getMandatoryKeys();
            lastFlags = getFlags();
            return new FSDataOutputStream(new Upload(getPath().toString()), null);
        }
    }

    /** Buffers the bytes; close() "uploads" them (or throws failOnClose), abort() drops them. */
    private static final class Upload extends OutputStream implements Abortable, StreamCapabilities {
        private final String key;
        private final ByteArrayOutputStream buffer = new ByteArrayOutputStream();

        Upload(String key) {
            this.key = key;
        }

        @Override
        public void write(int b) {
            buffer.write(b);
        }

        @Override
        public void close() throws IOException {
            if (failOnClose != null) {
                throw failOnClose;
            }
            OBJECTS.put(key, buffer.toString(java.nio.charset.StandardCharsets.UTF_8));
        }

        @Override
        public AbortableResult abort() {
            aborted = true;
            return new AbortableResult() {
                @Override
                public boolean alreadyClosed() {
                    return false;
                }

                @Override
                public IOException anyCleanupException() {
                    return null;
                }
            };
        }

        @Override
        public boolean hasCapability(String capability) {
            return StreamCapabilities.ABORTABLE_STREAM.equals(capability);
        }
    }

    @Override
    public Path getWorkingDirectory() {
        return new Path(uri.toString() + "/");
    }

    @Override
    public void setWorkingDirectory(Path dir) {
        throw new UnsupportedOperationException();
    }

    @Override
    public FSDataInputStream open(Path f, int bufferSize) {
        throw new UnsupportedOperationException();
    }

    @Override
    public FSDataOutputStream create(Path f, FsPermission permission, boolean overwrite,
            int bufferSize, short replication, long blockSize, Progressable progress) {
        throw new UnsupportedOperationException("the conditional path must use createFile()");
    }

    @Override
    public FSDataOutputStream append(Path f, int bufferSize, Progressable progress) {
        throw new UnsupportedOperationException();
    }

    @Override
    public boolean rename(Path src, Path dst) {
        throw new UnsupportedOperationException();
    }

    @Override
    public boolean delete(Path f, boolean recursive) {
        throw new UnsupportedOperationException();
    }

    @Override
    public FileStatus[] listStatus(Path f) {
        throw new UnsupportedOperationException();
    }

    @Override
    public boolean mkdirs(Path f, FsPermission permission) {
        throw new UnsupportedOperationException();
    }

    @Override
    public FileStatus getFileStatus(Path f) {
        throw new UnsupportedOperationException("the conditional path must not probe");
    }
}
