//! Field paths as kube-apiserver prints them: `spec.ports[0].port`, `metadata.labels[app]`.
//!
//! The counterpart of `field.NewPath("spec").Child("ports").Index(0)` of apimachinery.

use std::fmt;

/// A path to a field of an object. Cheap to extend: every step returns a new path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Path(String);

impl Path {
    /// A path starting at the top-level field `root` (`Path::new("spec")`).
    pub fn new(root: &str) -> Self {
        Path(root.to_owned())
    }

    /// The empty path, for errors about the object as a whole.
    pub fn root() -> Self {
        Path(String::new())
    }

    /// The field `name` of this path: `spec` → `spec.ports`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_owned())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    /// A dotted sequence of children: `child2("a", "b")` is `child("a").child("b")`.
    pub fn children(&self, names: &[&str]) -> Self {
        names
            .iter()
            .fold(self.clone(), |path, name| path.child(name))
    }

    /// Element `i` of a list: `spec.ports` → `spec.ports[0]`.
    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    /// Entry `key` of a map: `metadata.labels` → `metadata.labels[app]`.
    pub fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn builds_paths_like_apimachinery() {
        let p = Path::new("spec").child("ports").index(0).child("port");
        assert_eq!(p.to_string(), "spec.ports[0].port");
        assert_eq!(
            Path::new("metadata").child("labels").key("app").as_str(),
            "metadata.labels[app]"
        );
        assert_eq!(Path::root().child("data").as_str(), "data");
        assert_eq!(
            Path::new("spec").children(&["template", "spec"]).as_str(),
            "spec.template.spec"
        );
    }
}
