package dev.clickrec.delta.storage;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;

import software.amazon.awssdk.awscore.exception.AwsErrorDetails;
import software.amazon.awssdk.awscore.exception.AwsServiceException;
import software.amazon.awssdk.core.exception.SdkServiceException;

/**
 * Which failures of a conditional create mean "the object already exists".
 *
 * <p>S3A turns the PUT's 412 into {@code org.apache.hadoop.fs.s3a.RemoteFileChangedException} and
 * a 409 into {@code AWSBadRequestException}, each with the SDK's {@code S3Exception} as the cause;
 * S3 Express answers 200 with the error code {@code PreconditionFailed}. The S3A wrapper types
 * are not specific (RemoteFileChangedException is also what a read of a changed object throws),
 * so the answer is read off the SDK exception in the cause chain. It is typed: the SDK is on every
 * classpath S3A runs on, and a changed accessor then breaks the build rather than this check. It
 * lives in its own class so that {@link S3ConditionalPutLogStore} links to the SDK only when a
 * conditional create has failed.
 */
final class PreconditionFailures {

    static final int SC_409_CONFLICT = 409;
    static final int SC_412_PRECONDITION_FAILED = 412;
    /** S3 Express's error code for a failed condition (with status 200). */
    static final String PRECONDITION_FAILED = "PreconditionFailed";
    /** AWS's error code for a concurrent conditional write of the same key (status 409). */
    static final String CONDITIONAL_REQUEST_CONFLICT = "ConditionalRequestConflict";

    private PreconditionFailures() {
    }

    /**
     * True when {@code failure}, or a cause of it, says the object was there already: an S3
     * service error with status 412 or 409 (or the error codes above), or a
     * FileAlreadyExistsException (Hadoop's, from a filesystem's own existence check, or Java's).
     */
    static boolean isAlreadyExists(Throwable failure) {
        final Set<Throwable> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Throwable t = failure; t != null && seen.add(t); t = t.getCause()) {
            if (t instanceof org.apache.hadoop.fs.FileAlreadyExistsException
                    || t instanceof java.nio.file.FileAlreadyExistsException) {
                return true;
            }
            if (t instanceof SdkServiceException && isPreconditionFailure((SdkServiceException) t)) {
                return true;
            }
        }
        return false;
    }

    private static boolean isPreconditionFailure(SdkServiceException e) {
        final int status = e.statusCode();
        if (status == SC_412_PRECONDITION_FAILED || status == SC_409_CONFLICT) {
            return true;
        }
        if (e instanceof AwsServiceException) {
            final AwsErrorDetails details = ((AwsServiceException) e).awsErrorDetails();
            final String code = details == null ? null : details.errorCode();
            return PRECONDITION_FAILED.equals(code) || CONDITIONAL_REQUEST_CONFLICT.equals(code);
        }
        return false;
    }
}
