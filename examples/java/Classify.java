import ai.outpost.Config;
import ai.outpost.OutpostException;
import ai.outpost.Predictor;
import ai.outpost.Results;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Classifies (or detects objects in) an image with an Outpost package and prints the
 * results as JSON, like examples/c/classify.c and `outpost infer --json`.
 *
 *   java -Djava.library.path=DIR_WITH_LIBOUTPOST -cp CLASSES Classify MODEL.opk IMAGE KEY
 */
public final class Classify {
  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: Classify MODEL.opk IMAGE TRUSTED_KEY");
      System.exit(2);
    }
    Config config = new Config().trustedKeys(args[2]).threads(1);
    try (Predictor predictor = Predictor.open(args[0], config)) {
      Results results = predictor.infer(Files.readAllBytes(Path.of(args[1])));
      System.out.println(results.toJson());
    } catch (OutpostException e) {
      System.out.println("{\"error_code\":" + e.code() + "}");
      System.exit(1);
    }
  }
}
