//! Labelled image sets: an ImageFolder tree (one folder per class, named by its
//! label) or a `labels.tsv` list (`file<TAB>class_index`, paths relative to the list).

use std::path::{Path, PathBuf};

use crate::{io_err, Result, TrainerError};

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Image file.
    pub path: PathBuf,
    /// Class index in the label list.
    pub class: usize,
}

/// File endings read as images (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// True for file names ending in a supported image extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Loads a classification set from a folder tree or a list file, in a stable order.
pub fn load_classification(dataset: &Path, labels: &[String]) -> Result<Vec<Sample>> {
    let samples = if dataset.is_dir() {
        image_folder(dataset, labels)?
    } else {
        label_list(dataset, labels)?
    };
    if samples.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "{}: no images found",
            dataset.display()
        )));
    }
    Ok(samples)
}

fn image_folder(root: &Path, labels: &[String]) -> Result<Vec<Sample>> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    let mut samples = Vec::new();
    for dir in classes {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let class = labels.iter().position(|l| *l == name).ok_or_else(|| {
            TrainerError::Invalid(format!(
                "class folder {name:?} in {} is not a label of the model ({} labels)",
                root.display(),
                labels.len()
            ))
        })?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        samples.extend(files.into_iter().map(|path| Sample { path, class }));
    }
    Ok(samples)
}

fn label_list(list: &Path, labels: &[String]) -> Result<Vec<Sample>> {
    let text = std::fs::read_to_string(list).map_err(io_err(list))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == "file\tclass_index" => {}
        _ => {
            return Err(TrainerError::Invalid(format!(
                "{}: expected a header line `file<TAB>class_index`",
                list.display()
            )))
        }
    }
    let mut samples = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |why: &str| TrainerError::Invalid(format!("{} line {}: {why}", list.display(), i + 1));
        let (file, class) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected `file<TAB>class_index`"))?;
        let class: usize = class
            .trim()
            .parse()
            .map_err(|_| bad("class_index is not a number"))?;
        if class >= labels.len() {
            return Err(bad(&format!(
                "class_index {class} is outside the {} labels",
                labels.len()
            )));
        }
        samples.push(Sample {
            path: base.join(file),
            class,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["cat".into(), "dog".into()]
    }

    #[test]
    fn image_folder_maps_folder_names_to_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (class, file) in [("dog", "b.JPG"), ("cat", "a.png"), ("cat", "notes.txt")] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            std::fs::write(dir.path().join(class).join(file), b"x").unwrap();
        }
        let s = load_classification(dir.path(), &labels()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].class, s[1].class), (0, 1));
        std::fs::create_dir_all(dir.path().join("horse")).unwrap();
        let err = load_classification(dir.path(), &labels()).unwrap_err();
        assert!(err.to_string().contains("\"horse\""), "{err}");
    }

    #[test]
    fn label_lists_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("labels.tsv");
        std::fs::write(&list, "file\tclass_index\na.jpg\t1\nsub/b.jpg\t0\n\n").unwrap();
        let s = load_classification(&list, &labels()).unwrap();
        assert_eq!(s[0].path, dir.path().join("a.jpg"));
        assert_eq!(s[1].class, 0);
        for (text, needle) in [
            ("a.jpg\t1\n", "header"),
            ("file\tclass_index\na.jpg\t7\n", "line 2"),
            ("file\tclass_index\na.jpg 1\n", "line 2"),
            ("file\tclass_index\n", "no images"),
        ] {
            std::fs::write(&list, text).unwrap();
            let err = load_classification(&list, &labels()).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }
}
