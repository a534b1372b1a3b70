/*
 * Classifies (or detects objects in) an image with an Outpost package and prints
 * the results as JSON, in the shape of `outpost infer --json`:
 *
 *   classify MODEL.opk IMAGE [TRUSTED_KEY]
 *   {"error_code": 0, "results": [{"index": 282, "label": "tiger cat", "confidence": 0.53}]}
 *
 * Without TRUSTED_KEY, the key comes from OUTPOST_TRUSTED_KEYS. Every other
 * setting (threads, precision, serial, ...) can be set the same way with
 * outpost_config_set, or through its OUTPOST_* environment variable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <outpost.h>

/* Prints a JSON string literal. */
static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      printf("\\%c", c);
    } else if (c < 0x20) {
      printf("\\u%04x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

/* Prints the failure of the last call as JSON and returns the exit status. */
static int fail(int32_t code) {
  printf("{\"error_code\": %d, \"message\": ", (int)code);
  print_json_string(outpost_last_error_message());
  printf("}\n");
  return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char *data = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)size))) {
      if (fread(data, 1, (size_t)size, f) != (size_t)size) {
        free(data);
        data = NULL;
      } else {
        *len = (size_t)size;
      }
    }
  }
  fclose(f);
  return data;
}

static int print_results(const outpost_results_t *results) {
  int32_t task = 0, code;
  size_t count = 0;
  if ((code = outpost_results_task(results, &task)) != OUTPOST_OK) return fail(code);
  if ((code = outpost_results_count(results, &count)) != OUTPOST_OK) return fail(code);
  if (task == OUTPOST_TASK_RAW) {
    /* No decoder: the raw outputs, as the library writes them. */
    char *json = NULL;
    if ((code = outpost_results_json(results, &json)) != OUTPOST_OK) return fail(code);
    printf("{\"error_code\": 0, \"raw\": %s}\n", json);
    outpost_string_free(json);
    return 0;
  }
  printf("{\"error_code\": 0, \"results\": [");
  for (size_t i = 0; i < count; i++) {
    if (i > 0) printf(", ");
    if (task == OUTPOST_TASK_CLASSIFICATION) {
      outpost_classification_t c;
      if ((code = outpost_results_classification(results, i, &c)) != OUTPOST_OK) return fail(code);
      printf("{\"index\": %u, \"label\": ", c.index);
      print_json_string(c.label);
      printf(", \"confidence\": %.9g}", c.confidence);
    } else {
      outpost_detection_t d;
      if ((code = outpost_results_detection(results, i, &d)) != OUTPOST_OK) return fail(code);
      printf("{\"index\": %u, \"label\": ", d.index);
      print_json_string(d.label);
      printf(", \"confidence\": %.9g, \"x1\": %.9g, \"y1\": %.9g, \"x2\": %.9g, \"y2\": %.9g}",
             d.confidence, d.x1, d.y1, d.x2, d.y2);
    }
  }
  printf("]}\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s MODEL.opk IMAGE [TRUSTED_KEY]   (Outpost %s)\n", argv[0],
            outpost_version());
    return 2;
  }
  size_t len = 0;
  unsigned char *image = read_file(argv[2], &len);
  if (!image) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }

  outpost_config_t *config = NULL;
  outpost_predictor_t *predictor = NULL;
  outpost_results_t *results = NULL;
  int status = 1;
  int32_t code = outpost_config_new(&config);
  if (code == OUTPOST_OK && argc == 4) code = outpost_config_set(config, "trusted_keys", argv[3]);
  /* One CPU thread per inference; more lowers latency on a multi-core device. */
  if (code == OUTPOST_OK) code = outpost_config_set(config, "threads", "1");
  if (code == OUTPOST_OK) code = outpost_predictor_open(argv[1], config, &predictor);
  if (code == OUTPOST_OK) code = outpost_predictor_infer_image(predictor, image, len, &results);
  status = code == OUTPOST_OK ? print_results(results) : fail(code);

  outpost_results_free(results); /* freeing NULL does nothing */
  outpost_predictor_free(predictor);
  outpost_config_free(config);
  free(image);
  return status;
}
