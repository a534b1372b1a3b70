package ai.outpost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java API on the host JVM, loading the host build of liboutpost. The packages
 * and expectations come from ffi/tests/java_api.rs as system properties:
 * outpost.classifier (EfficientNet-Lite0), outpost.detector (YOLOv8), outpost.small
 * (PP-OCR orientation classifier), outpost.keys, outpost.images (shared/images),
 * outpost.text (an upside-down text PNG) and outpost.chelsea.top1 (onnxruntime's top-1).
 */
class PredictorTest {
  private static String prop(String name) {
    String v = System.getProperty(name);
    assertNotNull(v, "system property " + name);
    return v;
  }

  private static Config config() throws OutpostException {
    return new Config().trustedKeys(prop("outpost.keys")).threads(1);
  }

  private static byte[] image(String name) throws Exception {
    return Files.readAllBytes(Path.of(prop("outpost.images"), name));
  }

  private static int code(OutpostException e) {
    return e.code();
  }

  @Test
  void classifiesAPhotoLikeOnnxruntime() throws Exception {
    try (Predictor p = Predictor.open(prop("outpost.classifier"), config())) {
      Results r = p.infer(image("chelsea.jpg"));
      assertEquals(Task.CLASSIFICATION, r.task());
      List<Classification> c = r.classifications();
      assertEquals(5, c.size());
      assertEquals(Integer.parseInt(prop("outpost.chelsea.top1")), c.get(0).index);
      assertEquals("tiger cat", c.get(0).label);
      for (int i = 1; i < c.size(); i++) {
        assertTrue(c.get(i - 1).confidence >= c.get(i).confidence, "sorted best first");
      }
      assertTrue(r.detections().isEmpty());
      assertTrue(r.toJson().startsWith("{\"task\":\"classification\",\"results\":[{\"index\":282,"));
      String info = p.info();
      assertTrue(info.contains("\"task\":\"classification\""), info);
      assertTrue(info.contains("\"threads\":1"), info);
    }
  }

  @Test
  void detectsObjectsWithBoxesInsideTheImage() throws Exception {
    try (Predictor p = Predictor.open(prop("outpost.detector"), config())) {
      Results r = p.infer(image("astronaut.jpg"));
      assertEquals(Task.DETECTION, r.task());
      assertFalse(r.detections().isEmpty());
      for (Detection d : r.detections()) {
        assertTrue(d.x1 >= 0 && d.x1 < d.x2 && d.x2 <= 1, d.toString());
        assertTrue(d.y1 >= 0 && d.y1 < d.y2 && d.y2 <= 1, d.toString());
        assertTrue(d.confidence > 0.25f && d.confidence <= 1, d.toString());
        assertTrue(d.label.equals("Normal") || d.label.equals("Fall"), d.label);
      }
    }
  }

  @Test
  void argbPixelsGiveTheSameResultAsTheEncodedImage() throws Exception {
    File png = new File(prop("outpost.text"));
    BufferedImage img = ImageIO.read(png);
    int w = img.getWidth(), h = img.getHeight(), stride = w + 7;
    // What Bitmap.getPixels(pixels, 0, stride, 0, 0, w, h) gives: ARGB ints, padded rows.
    int[] pixels = new int[stride * h];
    img.getRGB(0, 0, w, h, pixels, 0, stride);
    try (Predictor p = Predictor.open(prop("outpost.small"), config())) {
      Classification fromPixels = p.inferArgb(pixels, w, h, stride).classifications().get(0);
      Classification fromFile = p.infer(Files.readAllBytes(png.toPath())).classifications().get(0);
      assertEquals("180", fromFile.label);
      assertEquals(fromFile.index, fromPixels.index);
      assertEquals(fromFile.confidence, fromPixels.confidence);
    }
  }

  @Test
  void opensAPackageFromAStreamLikeAnAndroidAsset(@TempDir Path cache) throws Exception {
    try (InputStream asset = new FileInputStream(prop("outpost.small"));
        Predictor p = Predictor.open(asset, cache.toFile(), config())) {
      assertEquals("180", p.infer(Files.readAllBytes(Path.of(prop("outpost.text"))))
          .classifications().get(0).label);
    }
    try (var left = Files.list(cache)) {
      assertEquals(0, left.count(), "the copy is removed once loaded");
    }
  }

  @Test
  void badInputThrowsWithItsCode() throws Exception {
    try (Predictor p = Predictor.open(prop("outpost.small"), config())) {
      assertEquals(1101, code(assertThrows(OutpostException.class, () -> p.infer("not an image".getBytes()))));
      assertEquals(1102, code(assertThrows(OutpostException.class, () -> p.infer(new byte[0]))));
      assertEquals(1006, code(assertThrows(OutpostException.class, () -> p.infer(null))));
      // A cut PNG (a cut JPEG decodes what it has, as libjpeg does).
      byte[] png = Files.readAllBytes(Path.of(prop("outpost.text")));
      byte[] truncated = java.util.Arrays.copyOf(png, png.length / 2);
      assertEquals(1101, code(assertThrows(OutpostException.class, () -> p.infer(truncated))));
      assertEquals(1103, code(assertThrows(OutpostException.class, () -> p.inferArgb(new int[10], 8, 8, 8))));
      assertEquals(1103, code(assertThrows(OutpostException.class, () -> p.inferArgb(new int[64], 8, 8, 4))));
      assertEquals(1006, code(assertThrows(OutpostException.class, () -> p.inferArgb(new int[64], -8, 8, 8))));
      assertEquals(1006, code(assertThrows(OutpostException.class, () -> p.inferArgb(null, 8, 8, 8))));
      assertEquals(1102, code(assertThrows(OutpostException.class, () -> p.inferArgb(new int[64], 0, 8, 8))));
      assertEquals(1104, code(assertThrows(OutpostException.class, () -> p.inferArgb(new int[64], 100000, 1, 100000))));
    }
    assertEquals(3001, code(assertThrows(OutpostException.class, () -> Predictor.open("/no/such.opk", config()))));
    assertEquals(1003, code(assertThrows(OutpostException.class, () -> Predictor.open(prop("outpost.small"), null))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Predictor.open(null, config()))));
    assertEquals(1001, code(assertThrows(OutpostException.class, () -> new Config().set("threads", "many"))));
    assertEquals(1001, code(assertThrows(OutpostException.class, () -> new Config().set("colour", "red"))));
    assertEquals(1001, code(assertThrows(OutpostException.class, () -> new Config().threads(0).precision("fp32").threshold(2f)
        .trustedKeys(prop("outpost.keys")).set("x", "y"))));
    Config wrongPrecision = config().precision("int8");
    assertEquals(3010, code(assertThrows(OutpostException.class, () -> Predictor.open(prop("outpost.small"), wrongPrecision))));
  }

  @Test
  void everyNativeEntryPointSurvivesGarbage() throws Exception {
    String[] none = new String[0];
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.open(null, none, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.open("x", null, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.open("x", new String[] {"threads"}, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.open("x", new String[] {null}, new String[] {"1"}))));
    // A lone surrogate is not valid Unicode: no crash, an error.
    assertThrows(OutpostException.class, () -> Native.open("\uD800.opk", none, none));
    assertThrows(OutpostException.class, () -> Native.checkSetting("\uDC00", "1"));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.checkSetting(null, "1"))));
    long forged = 0x1234_5678L;
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> Native.inferImage(forged, new byte[] {1}))));
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> Native.inferArgb(forged, new int[4], 2, 2, 2))));
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> Native.info(forged))));
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> Native.close(forged))));
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> Native.inferImage(-1L, new byte[] {1}))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.info(0L))));
    Native.close(0L); // closing nothing does nothing
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.licenseStatus(null, null, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.licenseActivate(null, none, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.licenseRequest(null, none, none))));
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> Native.licenseImport(null, null, none, none))));
    assertFalse(Predictor.version().isEmpty());
  }

  @Test
  void closeIsIdempotentAndUseAfterCloseIsAnError() throws Exception {
    Predictor p = Predictor.open(prop("outpost.small"), config());
    byte[] text = Files.readAllBytes(Path.of(prop("outpost.text")));
    p.infer(text);
    p.close();
    p.close();
    assertEquals(1007, code(assertThrows(OutpostException.class, () -> p.infer(text))));
    assertEquals(1007, code(assertThrows(OutpostException.class, p::info)));
  }

  @Test
  void onePredictorServesSeveralThreads() throws Exception {
    byte[] jpeg = image("coffee.jpg");
    try (Predictor p = Predictor.open(prop("outpost.classifier"), config())) {
      Classification expected = p.infer(jpeg).classifications().get(0);
      ExecutorService pool = Executors.newFixedThreadPool(4);
      try {
        List<Future<Classification>> runs = new ArrayList<>();
        for (int i = 0; i < 12; i++) {
          runs.add(pool.submit(() -> p.infer(jpeg).classifications().get(0)));
        }
        for (Future<Classification> run : runs) {
          Classification got = run.get();
          assertEquals(expected.index, got.index);
          assertEquals(expected.confidence, got.confidence);
        }
      } finally {
        pool.shutdown();
      }
    }
  }

  @Test
  void licenceCallsAnswerJsonOrCodes(@TempDir Path dir) throws Exception {
    Config c = config().licenseDir(dir.toString());
    String status = License.status(prop("outpost.small"), c);
    assertTrue(status.contains("\"licenses\":[]"), status);
    assertTrue(status.contains("open model"), status);
    OutpostException open =
        assertThrows(OutpostException.class, () -> License.activate(prop("outpost.small"), "ABCD-EFGH-JKMN-PQRS", "com.acme.app", c));
    assertEquals(1006, open.code());
    assertTrue(open.getMessage().contains("open model"), open.getMessage());
    assertEquals(1006, code(assertThrows(OutpostException.class, () -> License.request(prop("outpost.small"), c))));
    Path notALicence = dir.resolve("licence.json");
    Files.writeString(notALicence, "{\"not\": \"a licence\"}");
    assertEquals(2014, code(assertThrows(OutpostException.class, () -> License.importFile(notALicence.toString(), null, c))));
    assertEquals(1005, code(assertThrows(OutpostException.class, () -> License.importFile(dir.resolve("missing").toString(), null, c))));
  }
}
