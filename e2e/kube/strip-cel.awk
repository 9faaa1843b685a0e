# Removes every `x-kubernetes-validations:` block (CEL rules, Kubernetes >= 1.23)
# from a block-style YAML document, for the 1.20 test API server whose CRD
# schema has no such field. A block ends at the first line indented less than
# the key, or as much as the key without being one of its "- " list items.
{
    match($0, /^ */)
    indent = RLENGTH
    if (skipping) {
        if ($0 ~ /^ *$/ || indent > key_indent || (indent == key_indent && substr($0, indent + 1, 2) == "- ")) next
        skipping = 0
    }
    if ($0 ~ /^ *x-kubernetes-validations:/) {
        skipping = 1
        key_indent = indent
        stripped++
        next
    }
    print
}
END { if (stripped) printf "strip-cel.awk: removed %d x-kubernetes-validations block(s)\n", stripped > "/dev/stderr" }
