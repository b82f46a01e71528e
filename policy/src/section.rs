//! A section of a policy document (its segments, tenants, endpoints or rules), shared between
//! versions until one of them changes it: cloning a document is a handful of reference counts.
//! Reads see a `Vec`; the first write to a shared section copies it (copy on write).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A list shared between document versions, copied on its first change (see the module docs).
pub struct Section<T>(Arc<Vec<T>>);

impl<T> Section<T> {
    pub fn new() -> Self {
        Section(Arc::new(Vec::new()))
    }
    /// Whether this section and `other` are the very same list (shared, not merely equal).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Section<T> {
    fn clone(&self) -> Self {
        Section(Arc::clone(&self.0))
    }
}

impl<T> Deref for Section<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Clone> DerefMut for Section<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> From<Vec<T>> for Section<T> {
    fn from(v: Vec<T>) -> Self {
        Section(Arc::new(v))
    }
}

impl<T> FromIterator<T> for Section<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Section(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a, T> IntoIterator for &'a Section<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: PartialEq> PartialEq for Section<T> {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || *self.0 == *other.0
    }
}

impl<T: Eq> Eq for Section<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Section<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_until_one_writes() {
        let a: Section<u32> = vec![1, 2, 3].into();
        let mut b = a.clone();
        assert!(a.same(&b));
        b.push(4);
        assert!(!a.same(&b));
        assert_eq!(*a, vec![1, 2, 3]);
        assert_eq!(*b, vec![1, 2, 3, 4]);
        let c = b.clone();
        assert_eq!(b, c);
        assert_ne!(a, b);
    }

    #[test]
    fn serialises_as_a_list() {
        let a: Section<u32> = vec![7, 8].into();
        let js = serde_json::to_string(&a).unwrap();
        assert_eq!(js, "[7,8]");
        let back: Section<u32> = serde_json::from_str(&js).unwrap();
        assert_eq!(back, a);
    }
}

/// A tenant's name where a document refers to it (an endpoint's `tenant`): shared, so that copying
/// a list of a million endpoints copies no string. Reads, compares and serialises as a string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(Arc<str>);

impl TenantName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TenantName {
    fn from(s: &str) -> Self {
        TenantName(s.into())
    }
}

impl From<String> for TenantName {
    fn from(s: String) -> Self {
        TenantName(s.into())
    }
}

impl PartialEq<str> for TenantName {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for TenantName {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for TenantName {
    fn eq(&self, o: &String) -> bool {
        &*self.0 == o.as_str()
    }
}

impl PartialEq<TenantName> for String {
    fn eq(&self, o: &TenantName) -> bool {
        self.as_str() == &*o.0
    }
}

impl Serialize for TenantName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(TenantName::from)
    }
}

/// A tenant's `vteps` list: shared between copies of the tenant list (a copy allocates nothing).
/// Reads as a slice, serialises as a list of addresses.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VtepList(Arc<[std::net::IpAddr]>);

impl std::ops::Deref for VtepList {
    type Target = [std::net::IpAddr];
    fn deref(&self) -> &[std::net::IpAddr] {
        &self.0
    }
}

impl std::fmt::Debug for VtepList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<Vec<std::net::IpAddr>> for VtepList {
    fn from(v: Vec<std::net::IpAddr>) -> Self {
        VtepList(v.into())
    }
}

impl FromIterator<std::net::IpAddr> for VtepList {
    fn from_iter<I: IntoIterator<Item = std::net::IpAddr>>(iter: I) -> Self {
        VtepList(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a VtepList {
    type Item = &'a std::net::IpAddr;
    type IntoIter = std::slice::Iter<'a, std::net::IpAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for VtepList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for VtepList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<std::net::IpAddr>::deserialize(d).map(VtepList::from)
    }
}
