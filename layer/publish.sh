#!/usr/bin/env bash
# Publishes the layer zips from dist/ (built by `make layer`) as Lambda layer versions.
#
#   layer/publish.sh [--dry-run] [--region R ...] [--arch x86_64|arm64 ...] [--name NAME]
#
# For every architecture and region it runs `aws lambda publish-layer-version` and prints the
# new layer version ARN. The layer for an architecture is called NAME-ARCH (default NAME:
# lambda-shell-extension), so x86_64 and arm64 versions never mix under one name.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: layer/publish.sh [--dry-run] [--region R ...] [--arch x86_64|arm64 ...] [--name NAME]

Publishes dist/lambda-shell-extension-<version>-<arch>.zip (from `make layer`) as a Lambda
layer version named NAME-<arch>, in every given region, and prints each layer version ARN.

  --dry-run      print the aws commands instead of running them (no AWS CLI needed)
  --region R     region to publish in; repeat (or use commas) for several
                 (default: $AWS_REGION, else $AWS_DEFAULT_REGION)
  --arch A       x86_64 or arm64; repeat (or use commas) for both (default: both)
  --name NAME    base layer name (default: lambda-shell-extension)
  -h, --help     show this help

AWS credentials and profile come from the usual AWS CLI settings (AWS_PROFILE etc.).
EOF
}

die() {
    echo "publish.sh: error: $*" >&2
    exit 1
}

# Quotes a word for display, the way a user would type it: 'like this' when needed.
shell_quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

dry_run=false
name=lambda-shell-extension
region_list=""
arch_list=""

# Prints the comma-separated items of the arguments, one per line, without blanks or repeats.
# (Plain bash 3.2, as on macOS: no namerefs, no expansions of empty arrays under set -u.)
unique_items() {
    local seen=" " item items
    IFS=',' read -r -a items <<<"$*"
    ((${#items[@]} > 0)) || return 0
    for item in "${items[@]}"; do
        item=${item// /}
        [[ -n $item && $seen != *" $item "* ]] || continue
        seen+="$item "
        echo "$item"
    done
}

while (($# > 0)); do
    case $1 in
        --dry-run) dry_run=true ;;
        --region | --arch | --name)
            [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
            case $1 in
                --region) region_list+=",$2" ;;
                --arch) arch_list+=",$2" ;;
                --name) name=$2 ;;
            esac
            shift
            ;;
        --region=*) region_list+=",${1#*=}" ;;
        --arch=*) arch_list+=",${1#*=}" ;;
        --name=*) name=${1#*=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

regions=()
while IFS= read -r item; do regions+=("$item"); done < <(unique_items "$region_list")
arches=()
while IFS= read -r item; do arches+=("$item"); done < <(unique_items "$arch_list")
((${#arches[@]} > 0)) || arches=(x86_64 arm64)
for arch in "${arches[@]}"; do
    case $arch in
        x86_64 | arm64) ;;
        *) die "unknown architecture '$arch': use x86_64 or arm64" ;;
    esac
done

if ((${#regions[@]} == 0)); then
    region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
    [[ -n $region ]] || die "no region: pass --region R (for example --region eu-west-1), or set AWS_REGION"
    regions=("$region")
fi
for region in "${regions[@]}"; do
    [[ $region =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "'$region' does not look like an AWS region (e.g. us-east-1)"
done

[[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "invalid layer name '$name': use letters, digits, '-' and '_'"

# The version and licence of the crate, from the [package] table of Cargo.toml.
cargo_field() {
    awk -v key="$1" '
        /^\[/ { in_package = ($0 == "[package]") }
        in_package && $1 == key && $2 == "=" {
            value = $0
            sub(/^[^=]*=[ \t]*"/, "", value)
            sub(/".*$/, "", value)
            print value
            exit
        }' "$root/Cargo.toml"
}
version=$(cargo_field version)
[[ -n $version ]] || die "cannot read the package version from $root/Cargo.toml"
license=$(cargo_field license)
license=${license:-MIT OR Apache-2.0}

# Check every zip before publishing anything, so a missing one does not leave a half-done job.
for arch in "${arches[@]}"; do
    zip="$root/dist/lambda-shell-extension-$version-$arch.zip"
    [[ -s $zip ]] || die "$zip is missing (or empty): run make layer first"
    [[ $(head -c 2 "$zip") == PK ]] || die "$zip is not a zip file: run make layer again"
done

if ! $dry_run && ! command -v aws >/dev/null 2>&1; then
    die "the AWS CLI (aws) is not installed or not on PATH; install it, or use --dry-run to see the commands"
fi

for region in "${regions[@]}"; do
    for arch in "${arches[@]}"; do
        zip="$root/dist/lambda-shell-extension-$version-$arch.zip"
        command=(
            aws lambda publish-layer-version
            --layer-name "$name-$arch"
            --zip-file "fileb://$zip"
            --compatible-architectures "$arch"
            --description "lambda-shell-extension $version ($arch): runs SHELL_EXT_HANDLER for every Lambda INVOKE and SHUTDOWN event"
            --license-info "$license"
            --region "$region"
            --query LayerVersionArn
            --output text
        )
        if $dry_run; then
            line=""
            for word in "${command[@]}"; do
                line+="${line:+ }$(shell_quote "$word")"
            done
            echo "$line"
        else
            echo "publishing $name-$arch $version in $region ..." >&2
            "${command[@]}" || die "publishing $name-$arch in $region failed (aws exit status $?); see the AWS CLI's message above"
        fi
    done
done
