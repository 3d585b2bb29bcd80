"""The list server of KMS-protected immediate messaging (TR 33.829 §8.3.1.1): a MESSAGE to a
group PSI is resolved, passed on untouched to the members its ticket names and re-protected
for the others; members who are not registered get it when they register."""
