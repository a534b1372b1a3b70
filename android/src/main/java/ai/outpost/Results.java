package ai.outpost;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

/** The results of one inference. Immutable; safe to share between threads. */
public final class Results {
  private final Task task;
  private final List<Classification> classifications;
  private final List<Detection> detections;
  private final String rawJson;

  /** Built from what {@code Native.inferImage} returns. */
  Results(Object[] raw) {
    task = Task.fromCode((Integer) raw[0]);
    int[] indices = (int[]) raw[1];
    String[] labels = (String[]) raw[2];
    float[] values = (float[]) raw[3];
    rawJson = (String) raw[4];
    List<Classification> classes = new ArrayList<>();
    List<Detection> boxes = new ArrayList<>();
    for (int i = 0; i < indices.length; i++) {
      if (task == Task.CLASSIFICATION) {
        classes.add(new Classification(indices[i], labels[i], values[i]));
      } else if (task == Task.DETECTION) {
        int v = 5 * i;
        boxes.add(
            new Detection(
                indices[i], labels[i], values[v], values[v + 1], values[v + 2], values[v + 3],
                values[v + 4]));
      }
    }
    classifications = Collections.unmodifiableList(classes);
    detections = Collections.unmodifiableList(boxes);
  }

  /** What these results hold. */
  public Task task() {
    return task;
  }

  /** The classes, best first; empty unless the task is classification. */
  public List<Classification> classifications() {
    return classifications;
  }

  /** The boxes, best first; empty unless the task is detection. */
  public List<Detection> detections() {
    return detections;
  }

  /**
   * The results as JSON, in the shape every binding and the CLI use:
   * {@code {"task":"classification","results":[{"index":..,"label":..,"confidence":..}]}}.
   */
  public String toJson() {
    if (task == Task.RAW) {
      return rawJson;
    }
    StringBuilder json = new StringBuilder();
    json.append("{\"task\":\"").append(task.name().toLowerCase(Locale.ROOT)).append("\",\"results\":[");
    if (task == Task.CLASSIFICATION) {
      for (int i = 0; i < classifications.size(); i++) {
        Classification c = classifications.get(i);
        json.append(i > 0 ? "," : "")
            .append("{\"index\":").append(c.index)
            .append(",\"label\":").append(quote(c.label))
            .append(",\"confidence\":").append(c.confidence)
            .append('}');
      }
    } else {
      for (int i = 0; i < detections.size(); i++) {
        Detection d = detections.get(i);
        json.append(i > 0 ? "," : "")
            .append("{\"index\":").append(d.index)
            .append(",\"label\":").append(quote(d.label))
            .append(",\"confidence\":").append(d.confidence)
            .append(",\"x1\":").append(d.x1)
            .append(",\"y1\":").append(d.y1)
            .append(",\"x2\":").append(d.x2)
            .append(",\"y2\":").append(d.y2)
            .append('}');
      }
    }
    return json.append("]}").toString();
  }

  private static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
