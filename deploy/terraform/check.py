#!/usr/bin/env python3
"""Checks deploy/terraform without Terraform, providers or an AWS account
(scripts/terraform.sh check runs it, then checkov). The layout: one root configuration
(platform/), the modules it calls (modules/*/), and each environment as values for that
root (environments/ENV.tfvars, environments/ENV.s3.tfbackend), plus the account's own
values (environments/account.tfvars.example lists them).

1. every .tf, .tfvars and .tfbackend file parses (python-hcl2), and .tf files are only in
   platform/ and modules/*/;
2. in the root and each module, every var.X read is declared there; every declared
   variable is read and has a description and a type; every output has a description;
3. every module call's source directory exists; the call passes only variables that
   module declares, and every one it declares without a default;
4. every module.X.Y names a module called there and an output that module declares;
5. every local.X, data.T.N and resource reference T.N names a block declared there;
6. every output whose value comes from a secret is sensitive;
7. the root has its files, keeps its state in S3 with use_lockfile and encrypt, leaves
   the state's key and bucket to init (one root, so one key would mean one state for
   every environment), and tags everything through the aws provider's default_tags;
8. each environment's ENV.tfvars sets only variables the root declares, sets
   environment = "ENV", and none of the account's own values; every root variable
   without a default is set by it or listed in account.tfvars.example (which, like any
   ENV.account.tfvars present, sets only declared variables); its ENV.s3.tfbackend
   exists and sets a key of its own, different from every other environment's;
9. docs/deploy-aws.md has a table row for every root variable, whose column for each
   environment shows the value that environment gets (from its .tfvars, else the
   default, else "yours" for the account's own values); the secrets module creates every
   key deploy/kubernetes/base/secrets.yaml reads.

Prints one line per problem and a summary; exits 1 if there is any problem.
"""

import pathlib
import re
import sys
from dataclasses import dataclass, field

import hcl2

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOC = REPO / "docs" / "deploy-aws.md"
SECRETS_YAML = REPO / "deploy" / "kubernetes" / "base" / "secrets.yaml"
MODULES = HERE / "modules"
ROOT = HERE / "platform"
ENVIRONMENTS = HERE / "environments"
ACCOUNT_EXAMPLE = ENVIRONMENTS / "account.tfvars.example"
SECRETS_MODULE = MODULES / "secrets"
# secrets.yaml keys that an IAM role replaces on AWS (the database-backups module), so
# no static key exists to store.
REPLACED_BY_IAM = {"backup_s3_key", "backup_s3_key_secret"}

META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each"}
MODULE_FILES = {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
ROOT_FILES = MODULE_FILES | {"backend.tf", "providers.tf"}

NAME = r"([A-Za-z_][\w-]*)"
# A reference starts an expression or follows an operator: after a word character or a
# dot it is an attribute (each.value.var), not a reference.
START = r"(?<![\w.])"
VAR_REF = re.compile(START + r"var\." + NAME)
LOCAL_REF = re.compile(START + r"local\." + NAME)
DATA_REF = re.compile(START + r"data\." + NAME + r"\." + NAME)
MODULE_REF = re.compile(START + r"module\." + NAME + r"(?:\[[^\]]*\])?(?:\." + NAME + r")?")
# What makes a value secret: generated secrets and Secrets Manager's resources (their
# ARNs too, by this project's rule).
SECRET_SOURCE = re.compile(START + r"(random_password|random_bytes|aws_secretsmanager_secret(?:_version)?)\.")


@dataclass
class Report:
    checks: int = 0
    problems: list = field(default_factory=list)

    def expect(self, ok, where, problem):
        """Counts one check; prints and keeps the problem when it fails."""
        self.checks += 1
        if not ok:
            line = f"{where}: {problem}"
            self.problems.append(line)
            print(line)
        return ok


def unquote(text):
    """python-hcl2 keeps string literals and block labels quoted: "x" -> x."""
    if isinstance(text, str) and len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def strings(value):
    """Every string in a parsed value (expressions included), comments left out. Keys
    count where they are expressions ("kubernetes.io/cluster/${var.name}" = ...)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            if not key.startswith("__"):
                if "${" in key:
                    yield key
                yield from strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings(inner)


def blocks(parsed, kind, labels):
    """The `kind` blocks of a parsed file as (labels, body); labels is a tuple of `labels` names."""

    def unwrap(block, depth, found):
        if depth == 0:
            yield found, block
            return
        for label, inner in block.items():
            if not label.startswith("__"):
                yield from unwrap(inner, depth - 1, found + (unquote(label),))

    for block in parsed.get(kind, []):
        yield from unwrap(block, labels, ())


def is_true(value):
    return value is True or value == "${true}"


@dataclass
class Directory:
    """One Terraform configuration directory: a module or the root."""

    path: pathlib.Path
    kind: str
    files: dict = field(default_factory=dict)  # file name -> parsed content
    # Declarations, by index() once every file is parsed.
    variables: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    resources: set = field(default_factory=set)  # (type, name)
    data: set = field(default_factory=set)  # (type, name)
    providers: list = field(default_factory=list)  # ((name,), body)
    settings: list = field(default_factory=list)  # bodies of terraform blocks

    @property
    def name(self):
        return self.path.relative_to(HERE).as_posix()

    def each(self, kind, labels):
        for parsed in self.files.values():
            yield from blocks(parsed, kind, labels)

    def index(self):
        self.variables = {labels[0]: body for labels, body in self.each("variable", 1)}
        self.outputs = {labels[0]: body for labels, body in self.each("output", 1)}
        self.modules = {labels[0]: body for labels, body in self.each("module", 1)}
        self.resources = {labels for labels, _ in self.each("resource", 2)}
        self.data = {labels for labels, _ in self.each("data", 2)}
        self.providers = list(self.each("provider", 1))
        self.settings = [body for _, body in self.each("terraform", 0)]
        for _, body in self.each("locals", 0):
            self.locals.update({k: v for k, v in body.items() if not k.startswith("__")})

    def expressions(self, skip_variables=False):
        """Every string of the configuration; without the variable blocks, whose validations
        read the variable itself and so prove nothing about its use."""
        for parsed in self.files.values():
            for kind, content in parsed.items():
                if not kind.startswith("__") and not (skip_variables and kind == "variable"):
                    yield from strings(content)

    def provider_prefixes(self):
        """Resource type prefixes of the providers it requires (aws_, random_, ...)."""
        names = {"terraform"}
        for settings in self.settings:
            for required in settings.get("required_providers", []):
                names |= {k for k in required if not k.startswith("__")}
        return names


def parse(report, path):
    """A file's parsed content, or None (and a problem) when it does not parse."""
    try:
        with path.open() as handle:
            parsed = hcl2.load(handle)
        report.expect(True, path.relative_to(HERE), "")
        return parsed
    except Exception as error:  # noqa: BLE001 - any parser error is the problem to report
        report.expect(False, path.relative_to(HERE), f"does not parse: {str(error).splitlines()[0]}")
        return None


def load(report):
    """Parses the root and every module under deploy/terraform."""
    directories = {}
    for tf in sorted(HERE.rglob("*.tf")):
        if any(part.startswith(".terraform") for part in tf.relative_to(HERE).parts):
            continue
        if tf.parent == ROOT:
            kind = "root"
        elif tf.parent.parent == MODULES:
            kind = "module"
        else:
            report.expect(
                False,
                tf.relative_to(HERE),
                "is in neither platform/ nor a module: an environment is values (environments/ENV.tfvars)",
            )
            continue
        directory = directories.setdefault(tf.parent, Directory(tf.parent, kind))
        parsed = parse(report, tf)
        if parsed is not None:
            directory.files[tf.name] = parsed
    for directory in directories.values():
        directory.index()
    return directories


def values(parsed):
    """The settings of a parsed .tfvars or .tfbackend file."""
    return {k: v for k, v in (parsed or {}).items() if not k.startswith("__")}


@dataclass
class Environment:
    """One environment: its values for the root, its state's backend settings, and the
    account's own values when a file holds them."""

    name: str
    tfvars: dict
    backend: dict
    account: dict | None


def load_environments(report):
    """The environments/ files, parsed: the account example, then each environment."""
    if not report.expect(ACCOUNT_EXAMPLE.is_file(), "environments", f"no {ACCOUNT_EXAMPLE.name}"):
        return {}, []
    example = values(parse(report, ACCOUNT_EXAMPLE))
    found = [*ENVIRONMENTS.glob("*.tfvars"), *ENVIRONMENTS.glob("*.tfbackend")]
    environments = []
    for name in sorted({path.name.split(".")[0] for path in found}):
        tfvars, backend, account = (
            ENVIRONMENTS / f"{name}{suffix}" for suffix in (".tfvars", ".s3.tfbackend", ".account.tfvars")
        )
        present = [report.expect(path.is_file(), "environments", f"no {path.name}") for path in (tfvars, backend)]
        if all(present):
            environments.append(
                Environment(
                    name,
                    values(parse(report, tfvars)),
                    values(parse(report, backend)),
                    values(parse(report, account)) if account.is_file() else None,
                )
            )
    report.expect(bool(environments), "environments", "no environment (ENV.tfvars and ENV.s3.tfbackend)")
    return example, environments


def check_files(report, directory):
    wanted = ROOT_FILES if directory.kind == "root" else MODULE_FILES
    for name in sorted(wanted):
        report.expect((directory.path / name).is_file(), directory.name, f"no {name}")


def check_variables_and_outputs(report, directory):
    read = {m for text in directory.expressions() for m in VAR_REF.findall(text)}
    used = {m for text in directory.expressions(skip_variables=True) for m in VAR_REF.findall(text)}
    for name in sorted(read):
        report.expect(name in directory.variables, directory.name, f"var.{name} is not declared")
    for name, body in sorted(directory.variables.items()):
        report.expect(name in used, directory.name, f"variable {name} is never used")
        report.expect("description" in body, directory.name, f"variable {name} has no description")
        report.expect("type" in body, directory.name, f"variable {name} has no type")
    for name, body in sorted(directory.outputs.items()):
        report.expect("description" in body, directory.name, f"output {name} has no description")


def check_references(report, directory):
    """local.X, data.T.N and T.N (for the required providers' types) name declared blocks."""
    prefixes = "|".join(sorted(directory.provider_prefixes()))
    resource_ref = re.compile(START + r"((?:" + prefixes + r")_[a-z0-9_]+)\." + NAME)
    texts = list(directory.expressions())
    for name in sorted({m for text in texts for m in LOCAL_REF.findall(text)}):
        report.expect(name in directory.locals, directory.name, f"local.{name} is not declared")
    for kind, name in sorted({m for text in texts for m in DATA_REF.findall(text)}):
        report.expect((kind, name) in directory.data, directory.name, f"data.{kind}.{name} is not declared")
    for kind, name in sorted({m for text in texts for m in resource_ref.findall(text)}):
        report.expect((kind, name) in directory.resources, directory.name, f"{kind}.{name} is not declared")


def called_module(directory, directories, body):
    """The Directory a module call's local source points at, or None."""
    source = unquote(body.get("source", ""))
    if not source.startswith(("./", "../")):
        return None
    return directories.get((directory.path / source).resolve())


def check_module_calls(report, directory, directories):
    for name, body in sorted(directory.modules.items()):
        target = called_module(directory, directories, body)
        where = f"{directory.name}: module {name}"
        if not report.expect(
            target is not None, where, f"source {unquote(body.get('source'))} is no module directory here"
        ):
            continue
        passed = {k for k in body if not k.startswith("__") and k not in META_ARGUMENTS}
        for argument in sorted(passed):
            report.expect(argument in target.variables, where, f"{target.name} declares no variable {argument}")
        for variable, declaration in sorted(target.variables.items()):
            if "default" not in declaration:
                report.expect(variable in passed, where, f"required variable {variable} of {target.name} is not passed")
    for module, output in sorted({m for text in directory.expressions() for m in MODULE_REF.findall(text)}):
        if not report.expect(module in directory.modules, directory.name, f"module.{module} is not called here"):
            continue
        target = called_module(directory, directories, directory.modules[module])
        if output and target is not None:
            report.expect(
                output in target.outputs, directory.name, f"module.{module}.{output}: {target.name} has no such output"
            )


def secret_derived(directory, directories, texts, tainted_locals):
    """Whether expressions read a secret: a secret source, a sensitive variable, a
    sensitive output of a called module, or a local computed from any of these."""
    for text in texts:
        if SECRET_SOURCE.search(text):
            return True
        if any(is_true(directory.variables.get(v, {}).get("sensitive")) for v in VAR_REF.findall(text)):
            return True
        if any(name in tainted_locals for name in LOCAL_REF.findall(text)):
            return True
        for module, output in MODULE_REF.findall(text):
            target = called_module(directory, directories, directory.modules.get(module, {}))
            if target is not None and is_true(target.outputs.get(output, {}).get("sensitive")):
                return True
    return False


def check_sensitive_outputs(report, directory, directories):
    # Locals computed from secrets, to a fixed point (a local may read another).
    tainted = set()
    while True:
        more = {
            name
            for name, value in directory.locals.items()
            if name not in tainted and secret_derived(directory, directories, strings(value), tainted)
        }
        if not more:
            break
        tainted |= more
    for name, body in sorted(directory.outputs.items()):
        if secret_derived(directory, directories, strings(body.get("value")), tainted):
            report.expect(
                is_true(body.get("sensitive")),
                directory.name,
                f"output {name} comes from a secret but is not sensitive",
            )


def variable_rows():
    """The rows of docs/deploy-aws.md's tables whose first column is `variable`: each
    variable's cells, by column heading."""
    rows, heading = {}, None
    for line in DOC.read_text().splitlines() if DOC.is_file() else []:
        if not line.lstrip().startswith("|"):
            heading = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if heading is None:
            heading = cells
        elif heading[0] == "variable" and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = dict(zip(heading, cells))
    return rows


def shown(value):
    """How docs/deploy-aws.md shows a value: each of its scalars in backticks."""
    if isinstance(value, bool):
        return [f"`{str(value).lower()}`"]
    if isinstance(value, (list, dict)):
        inner = value.values() if isinstance(value, dict) else value
        found = [text for item in inner for text in shown(item)]
        return found or ["`{}`" if isinstance(value, dict) else "`[]`"]
    return [f"`{unquote(value)}`"]


def check_root(report, root):
    backends = [(labels[0], body) for settings in root.settings for labels, body in blocks(settings, "backend", 1)]
    if report.expect([kind for kind, _ in backends] == ["s3"], root.name, 'needs exactly one backend, "s3"'):
        backend = backends[0][1]
        report.expect(is_true(backend.get("use_lockfile")), root.name, "the s3 backend needs use_lockfile = true")
        report.expect(is_true(backend.get("encrypt")), root.name, "the s3 backend needs encrypt = true")
        for setting in ("key", "bucket"):
            report.expect(
                setting not in backend,
                root.name,
                f"the s3 backend sets {setting}: it comes at init, from the environment and its account",
            )
    aws = [body for labels, body in root.providers if labels[0] == "aws"]
    report.expect(
        bool(aws) and all("default_tags" in body for body in aws),
        root.name,
        "every aws provider needs default_tags",
    )


def check_environments(report, root, example, environments):
    where = f"environments/{ACCOUNT_EXAMPLE.name}"
    for name in sorted(example):
        report.expect(name in root.variables, where, f"sets undeclared variable {name}")
    keys = {}
    for environment in environments:
        where = f"environments/{environment.name}.tfvars"
        for name in sorted(environment.tfvars):
            report.expect(name in root.variables, where, f"sets undeclared variable {name}")
            report.expect(name not in example, where, f"sets {name}, one of the account's own values")
        report.expect(
            unquote(environment.tfvars.get("environment")) == environment.name,
            where,
            f'needs environment = "{environment.name}", its file\'s name',
        )
        for name, body in sorted(root.variables.items()):
            report.expect(
                "default" in body or name in environment.tfvars or name in example,
                where,
                f"does not set {name}, which has no default and is not one of the account's own values",
            )
        if environment.account is not None:
            for name in sorted(environment.account):
                where = f"environments/{environment.name}.account.tfvars"
                report.expect(name in root.variables, where, f"sets undeclared variable {name}")
        key = unquote(environment.backend.get("key"))
        where = f"environments/{environment.name}.s3.tfbackend"
        if report.expect(bool(key), where, "sets no key: the state's object in the bucket"):
            report.expect(key not in keys, where, f"shares its state's key {key} with {keys.get(key)}")
            keys[key] = environment.name


def check_docs(report, root, example, environments):
    rows = variable_rows()
    doc = DOC.relative_to(REPO)
    for name, body in sorted(root.variables.items()):
        row = rows.get(name)
        if not report.expect(row is not None, root.name, f"variable {name} has no row in the variables table of {doc}"):
            continue
        for environment in environments:
            cell = row.get(environment.name)
            if not report.expect(cell is not None, str(doc), f"the variables table has no column {environment.name}"):
                return
            if name in environment.tfvars:
                wanted = shown(environment.tfvars[name])
            elif "default" in body:
                wanted = shown(body["default"])
            else:
                wanted = ["yours"] if name in example else []
            missing = [text for text in wanted if text not in cell]
            report.expect(not missing, str(doc), f"{name} in {environment.name} is {', '.join(wanted)}, not {cell}")


def check_secret_keys(report, directories):
    """The secrets module creates every key the ExternalSecrets read."""
    module = directories.get(SECRETS_MODULE)
    if not report.expect(module is not None, "modules/secrets", "missing"):
        return
    wanted = set(re.findall(r"key:\s*flowforge/(\w+)", SECRETS_YAML.read_text())) - REPLACED_BY_IAM
    named = set()
    for parsed in module.files.values():
        for _, body in blocks(parsed, "locals", 0):
            named |= {k for k in body if not k.startswith("__")}
            named |= {k for value in body.values() if isinstance(value, dict) for k in value}
        named |= {m for text in strings(parsed) for m in re.findall(r'"(\w+)"', text)}
    for key in sorted(wanted):
        report.expect(key in named, "modules/secrets", f"creates no flowforge/{key}, which secrets.yaml reads")


def check_all(report, directories, example, environments):
    for directory in directories.values():
        check_files(report, directory)
        check_variables_and_outputs(report, directory)
        check_references(report, directory)
        check_module_calls(report, directory, directories)
        check_sensitive_outputs(report, directory, directories)
    root = directories.get(ROOT)
    if report.expect(root is not None, "platform", "missing: the root configuration"):
        check_root(report, root)
        check_environments(report, root, example, environments)
        check_docs(report, root, example, environments)
    check_secret_keys(report, directories)


def main():
    report = Report()
    directories = load(report)
    example, environments = load_environments(report)
    # Cross-references over a half-read configuration would only add noise.
    if not report.problems:
        check_all(report, directories, example, environments)
    files = sum(len(d.files) for d in directories.values())
    modules = sum(d.kind == "module" for d in directories.values())
    print(
        f"terraform: {files} .tf files, {modules} modules, {len(environments)} environments "
        f"({', '.join(e.name for e in environments)}), {report.checks} checks, {len(report.problems)} problems"
    )
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
