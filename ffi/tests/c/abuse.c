/*
 * Feeds garbage to every entry point of the C API and checks the codes that come
 * back: null pointers, wrong sizes, invalid UTF-8, freed, foreign and wrong-kind
 * handles, corrupt images; then one predictor shared by several threads.
 *
 *   abuse PACKAGE TRUSTED_KEY IMAGE LICENSE_DIR
 *
 * PACKAGE is an open (unlicensed) classification package; LICENSE_DIR an empty
 * directory. Ends with "N passed, N failed"; exits 1 if anything failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <outpost.h>

static int passed = 0, failed = 0;

static void expect_code(int32_t got, int32_t want, const char *what, int line) {
  if (got == want) {
    passed++;
  } else {
    failed++;
    fprintf(stderr, "FAIL line %d: %s: got %d, want %d (%s)\n", line, what, (int)got, (int)want,
            outpost_last_error_message());
  }
}
#define EXPECT(call, want) expect_code((call), (want), #call, __LINE__)

static void expect_true(int ok, const char *what, int line) {
  if (ok) {
    passed++;
  } else {
    failed++;
    fprintf(stderr, "FAIL line %d: %s\n", line, what);
  }
}
#define CHECK(cond) expect_true((cond) ? 1 : 0, #cond, __LINE__)

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = malloc((size_t)size);
  if (data && fread(data, 1, (size_t)size, f) != (size_t)size) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *len = (size_t)size;
  return data;
}

/* ---- several threads on one predictor ---- */

struct job {
  const outpost_predictor_t *predictor;
  const unsigned char *image;
  size_t len;
  uint32_t want_index;
  float want_confidence;
  int ok;
};

static void *infer_repeatedly(void *arg) {
  struct job *job = arg;
  job->ok = outpost_last_error_code() == OUTPOST_OK; /* a fresh thread has no error */
  for (int i = 0; i < 4; i++) {
    outpost_results_t *r = NULL;
    outpost_classification_t c;
    if (outpost_predictor_infer_image(job->predictor, job->image, job->len, &r) != OUTPOST_OK ||
        outpost_results_classification(r, 0, &c) != OUTPOST_OK || c.index != job->want_index ||
        c.confidence != job->want_confidence) {
      job->ok = 0;
    }
    outpost_results_free(r);
  }
  /* An error on this thread does not show on the others. */
  outpost_results_t *r = NULL;
  if (outpost_predictor_infer_image(job->predictor, (const unsigned char *)"junk", 4, &r) != 1101 ||
      outpost_last_error_code() != 1101) {
    job->ok = 0;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s PACKAGE TRUSTED_KEY IMAGE LICENSE_DIR\n", argv[0]);
    return 2;
  }
  const char *package = argv[1], *key = argv[2], *license_dir = argv[4];
  size_t len = 0;
  unsigned char *image = read_file(argv[3], &len);
  if (!image) {
    fprintf(stderr, "cannot read %s\n", argv[3]);
    return 2;
  }
  const char *bad_utf8 = "\xff\xfe\xfd";
  /* Pointers this library never made, to stand in for forged or stale handles. */
  int stack_thing = 0;
  outpost_config_t *forged_config = (outpost_config_t *)&stack_thing;
  outpost_predictor_t *forged_predictor = (outpost_predictor_t *)(uintptr_t)0x1234;

  /* ---- version and last error ---- */
  CHECK(outpost_version() != NULL && strlen(outpost_version()) > 0);
  EXPECT(outpost_last_error_code(), OUTPOST_OK);
  CHECK(strcmp(outpost_last_error_message(), "") == 0);

  /* ---- config ---- */
  outpost_config_t *config = NULL;
  EXPECT(outpost_config_new(NULL), 1006);
  CHECK(strstr(outpost_last_error_message(), "out_config") != NULL);
  EXPECT(outpost_last_error_code(), 1006);
  EXPECT(outpost_config_new(&config), OUTPOST_OK);
  CHECK(config != NULL);
  EXPECT(outpost_config_set(NULL, "threads", "1"), 1006);
  EXPECT(outpost_config_set(forged_config, "threads", "1"), 1007);
  EXPECT(outpost_config_set(config, NULL, "1"), 1006);
  EXPECT(outpost_config_set(config, bad_utf8, "1"), 1006);
  EXPECT(outpost_config_set(config, "threads", bad_utf8), 1006);
  EXPECT(outpost_config_set(config, "threads", "many"), 1001);
  EXPECT(outpost_config_set(config, "colour", "red"), 1001);
  EXPECT(outpost_config_set(config, "threshold", "1.5"), OUTPOST_OK); /* range is checked on use */
  EXPECT(outpost_config_set(config, "threshold", NULL), OUTPOST_OK);
  EXPECT(outpost_config_set(config, "threads", "1"), OUTPOST_OK);
  EXPECT(outpost_config_set(config, "license_dir", license_dir), OUTPOST_OK);

  /* ---- opening ---- */
  outpost_predictor_t *predictor = forged_predictor;
  EXPECT(outpost_predictor_open(NULL, config, &predictor), 1006);
  CHECK(predictor == NULL); /* a failed call clears its out-pointer */
  EXPECT(outpost_predictor_open(package, config, NULL), 1006);
  EXPECT(outpost_predictor_open(bad_utf8, config, &predictor), 1006);
  EXPECT(outpost_predictor_open(package, forged_config, &predictor), 1007);
  EXPECT(outpost_predictor_open(package, config, &predictor), 1003); /* no trusted key yet */
  EXPECT(outpost_config_set(config, "trusted_keys", "/no/such/public.key"), OUTPOST_OK);
  EXPECT(outpost_predictor_open(package, config, &predictor), 1004);
  EXPECT(outpost_config_set(config, "trusted_keys", key), OUTPOST_OK);
  EXPECT(outpost_predictor_open("/no/such/model.opk", config, &predictor), 3001);
  EXPECT(outpost_config_set(config, "precision", "int8"), OUTPOST_OK);
  EXPECT(outpost_predictor_open(package, config, &predictor), 3010); /* no INT8 artifact */
  EXPECT(outpost_config_set(config, "precision", NULL), OUTPOST_OK);
  EXPECT(outpost_predictor_open(package, config, &predictor), OUTPOST_OK);
  CHECK(predictor != NULL);

  /* ---- inference on bad input ---- */
  outpost_results_t *results = NULL;
  static const unsigned char junk[] = "definitely not an image";
  EXPECT(outpost_predictor_infer_image(predictor, NULL, 10, &results), 1006);
  EXPECT(outpost_predictor_infer_image(predictor, image, 0, &results), 1006);
  EXPECT(outpost_predictor_infer_image(predictor, image, len, NULL), 1006);
  EXPECT(outpost_predictor_infer_image(predictor, image, SIZE_MAX, &results), 1006);
  EXPECT(outpost_predictor_infer_image(predictor, junk, sizeof junk, &results), 1101);
  EXPECT(outpost_predictor_infer_image(predictor, image, len / 2, &results), 1101); /* truncated */
  EXPECT(outpost_predictor_infer_image(NULL, image, len, &results), 1006);
  EXPECT(outpost_predictor_infer_image(forged_predictor, image, len, &results), 1007);
  EXPECT(outpost_predictor_infer_image((const outpost_predictor_t *)config, image, len, &results), 1007);
  CHECK(strstr(outpost_last_error_message(), "config handle") != NULL);

  enum { W = 64, H = 32 };
  static unsigned char pixels[(W + 3) * 4 * H];
  for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (unsigned char)(i * 7);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, W * 3 * H - 1, W, H, W * 3,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1103);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, W, H, W * 3 - 1,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1103);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, W, H, W * 3, 99, &results), 1006);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, W, H, W * 3, -1, &results), 1006);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, 0, H, W * 3,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1102);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, 100000, 1, 300000,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1104);
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, W, H, SIZE_MAX,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1103);
  EXPECT(outpost_predictor_infer_pixels(predictor, NULL, sizeof pixels, W, H, W * 3,
                                        OUTPOST_PIXEL_FORMAT_RGB8, &results), 1006);
  /* A padded BGRA buffer works. */
  EXPECT(outpost_predictor_infer_pixels(predictor, pixels, sizeof pixels, W, H, (W + 3) * 4,
                                        OUTPOST_PIXEL_FORMAT_BGRA8, &results), OUTPOST_OK);
  EXPECT(outpost_results_free(results), OUTPOST_OK);

  /* ---- results ---- */
  EXPECT(outpost_predictor_infer_image(predictor, image, len, &results), OUTPOST_OK);
  int32_t task = 0;
  size_t count = 0;
  outpost_classification_t top;
  outpost_detection_t box;
  EXPECT(outpost_results_task(results, &task), OUTPOST_OK);
  EXPECT(task, OUTPOST_TASK_CLASSIFICATION);
  EXPECT(outpost_results_task(results, NULL), 1006);
  EXPECT(outpost_results_task(NULL, &task), 1006);
  EXPECT(outpost_results_count(results, &count), OUTPOST_OK);
  CHECK(count >= 1);
  EXPECT(outpost_results_count(results, NULL), 1006);
  size_t ignored = 0;
  EXPECT(outpost_results_count((const outpost_results_t *)predictor, &ignored), 1007);
  EXPECT(outpost_results_classification(results, 0, &top), OUTPOST_OK);
  CHECK(top.label != NULL && top.confidence > 0.0f && top.confidence <= 1.0f);
  EXPECT(outpost_results_classification(results, count, &top), 1006);
  CHECK(top.label == NULL); /* cleared on failure */
  EXPECT(outpost_results_classification(results, SIZE_MAX, &top), 1006);
  EXPECT(outpost_results_classification(results, 0, NULL), 1006);
  EXPECT(outpost_results_detection(results, 0, &box), 1006); /* not a detection */
  EXPECT(outpost_results_detection(results, 0, NULL), 1006);
  char *json = NULL;
  EXPECT(outpost_results_json(results, &json), OUTPOST_OK);
  CHECK(json != NULL && strstr(json, "\"task\":\"classification\"") != NULL);
  EXPECT(outpost_results_json(results, NULL), 1006);
  EXPECT(outpost_string_free(json), OUTPOST_OK);
  EXPECT(outpost_string_free(json), 1006); /* freed already */
  EXPECT(outpost_string_free((char *)&stack_thing), 1006); /* not ours */
  EXPECT(outpost_string_free(NULL), OUTPOST_OK);
  EXPECT(outpost_results_classification(results, 0, &top), OUTPOST_OK);
  uint32_t want_index = top.index;
  float want_confidence = top.confidence;
  EXPECT(outpost_results_free(results), OUTPOST_OK);
  EXPECT(outpost_results_free(results), 1007);
  EXPECT(outpost_results_count(results, &count), 1007);
  CHECK(strstr(outpost_last_error_message(), "freed already") != NULL);
  EXPECT(outpost_results_free(NULL), OUTPOST_OK);

  /* ---- predictor info ---- */
  char *info = NULL;
  EXPECT(outpost_predictor_info(predictor, &info), OUTPOST_OK);
  CHECK(info != NULL && strstr(info, "\"task\":\"classification\"") != NULL);
  EXPECT(outpost_string_free(info), OUTPOST_OK);
  EXPECT(outpost_predictor_info(predictor, NULL), 1006);
  EXPECT(outpost_predictor_info(forged_predictor, &info), 1007);

  /* ---- several threads on one predictor ---- */
  enum { THREADS = 4 };
  pthread_t threads[THREADS];
  struct job jobs[THREADS];
  for (int t = 0; t < THREADS; t++) {
    jobs[t] = (struct job){predictor, image, len, want_index, want_confidence, 0};
    CHECK(pthread_create(&threads[t], NULL, infer_repeatedly, &jobs[t]) == 0);
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(threads[t], NULL);
    CHECK(jobs[t].ok);
  }
  /* The threads' errors did not touch this thread's last error. */
  EXPECT(outpost_last_error_code(), 1007);

  /* ---- licences ---- */
  char *status = NULL;
  EXPECT(outpost_license_status(config, NULL, &status), OUTPOST_OK);
  CHECK(status != NULL && strstr(status, "\"licenses\":[]") != NULL);
  EXPECT(outpost_string_free(status), OUTPOST_OK);
  EXPECT(outpost_license_status(config, package, &status), OUTPOST_OK);
  CHECK(status != NULL && strstr(status, "open model") != NULL);
  EXPECT(outpost_string_free(status), OUTPOST_OK);
  EXPECT(outpost_license_status(config, NULL, NULL), 1006);
  EXPECT(outpost_license_status(config, bad_utf8, &status), 1006);
  EXPECT(outpost_license_status(forged_config, NULL, &status), 1007);
  EXPECT(outpost_license_activate(package, config, NULL), 1006); /* an open model */
  CHECK(strstr(outpost_last_error_message(), "open model") != NULL);
  EXPECT(outpost_license_activate(NULL, config, NULL), 1006);
  EXPECT(outpost_license_request(package, config, &status), 1006);
  EXPECT(outpost_license_request(package, config, NULL), 1006);
  EXPECT(outpost_license_import("/no/such/licence.json", NULL, config, NULL), 1005);
  EXPECT(outpost_license_import(argv[3], NULL, config, NULL), 2014); /* an image is not a licence */
  EXPECT(outpost_license_import(NULL, NULL, config, NULL), 1006);
  EXPECT(outpost_license_import(argv[3], bad_utf8, config, NULL), 1006);

  /* ---- freeing ---- */
  EXPECT(outpost_predictor_free(predictor), OUTPOST_OK);
  EXPECT(outpost_predictor_free(predictor), 1007);
  EXPECT(outpost_predictor_infer_image(predictor, image, len, &results), 1007);
  EXPECT(outpost_predictor_free(NULL), OUTPOST_OK);
  EXPECT(outpost_config_free(config), OUTPOST_OK);
  EXPECT(outpost_config_free(config), 1007);
  EXPECT(outpost_config_set(config, "threads", "1"), 1007);
  EXPECT(outpost_config_free(NULL), OUTPOST_OK);

  free(image);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
