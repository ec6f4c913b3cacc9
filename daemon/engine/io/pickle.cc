#include "engine/io/pickle.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "util/utf8.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace atelier::engine::pickle {
namespace {

// Opcodes (CPython Lib/pickle.py names).
enum Op : unsigned char {
  MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', FLOAT = 'F', INT = 'I', BININT = 'J',
  BININT1 = 'K', LONG = 'L', BININT2 = 'M', NONE = 'N', PERSID = 'P', BINPERSID = 'Q', REDUCE = 'R',
  STRING = 'S', BINSTRING = 'T', SHORT_BINSTRING = 'U', UNICODE = 'V', BINUNICODE = 'X', APPEND = 'a',
  BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', APPENDS = 'e', GET = 'g', BINGET = 'h', INST = 'i',
  LONG_BINGET = 'j', LIST = 'l', EMPTY_LIST = ']', OBJ = 'o', PUT = 'p', BINPUT = 'q', LONG_BINPUT = 'r',
  SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINFLOAT = 'G',
  // protocol 2
  PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85, TUPLE2 = 0x86,
  TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b,
  // protocol 3
  BINBYTES = 'B', SHORT_BINBYTES = 'C',
  // protocol 4
  SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90,
  FROZENSET = 0x91, NEWOBJ_EX = 0x92, STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
  // protocol 5
  BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97, READONLY_BUFFER = 0x98,
};

// Modules whose callables can run code, touch files or the network. Calling anything from them is refused
// outright (it would never run here, but a file that tries is malicious and the user should know).
constexpr const char* kDangerousModules[] = {
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "socket", "importlib", "runpy",
    "pty", "commands", "code", "codeop", "webbrowser", "ctypes", "pickle", "_pickle", "marshal", "types",
    "operator", "functools", "io", "_io", "pathlib", "tempfile", "multiprocessing", "threading", "_thread",
    "signal", "platform", "asyncio", "urllib", "http", "ftplib", "telnetlib", "smtplib", "timeit", "pdb", "bdb",
    "trace", "cProfile", "profile", "site", "distutils", "setuptools", "pip", "glob", "fcntl", "select",
    "selectors", "ssl", "zipimport", "inspect", "gc", "torch",
};

// Calls that are understood (the rest of builtins/torch is refused, other modules give placeholders).
bool IsKnownSafeCall(absl::string_view name) {
  static constexpr const char* kKnown[] = {
      "collections.OrderedDict", "collections.defaultdict", "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2", "torch.Size",
      "torch.device", "torch.nn.modules.container.ParameterDict", "torch.nn.parameter.Parameter",
      "builtins.set", "builtins.frozenset", "builtins.bytearray", "__builtin__.set", "__builtin__.frozenset",
      "_codecs.encode",
  };
  for (const char* k : kKnown) {
    if (name == k) return true;
  }
  return false;
}

bool IsDangerous(absl::string_view name) {
  if (IsKnownSafeCall(name)) return false;
  for (const char* module : kDangerousModules) {
    if (absl::StartsWith(name, module) &&
        (name.size() == strlen(module) || name[strlen(module)] == '.')) {
      return true;
    }
  }
  return false;
}

// Owns every value of one run.
struct Arena {
  std::vector<std::unique_ptr<Value>> values;
};

class Machine {
 public:
  Machine(absl::string_view data, absl::string_view label, const PersistentLoader& persistent, const Limits& limits)
      : data_(data), label_(label), persistent_(persistent), limits_(limits) {}

  absl::StatusOr<ValuePtr> Run(std::size_t* consumed);

  using Ref = Value*;

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("pickle in '", label_, "' at byte ", op_pos_, ": ", what));
  }
  bool Take(std::size_t n, absl::string_view* out) {
    if (data_.size() - pos_ < n) return false;
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool TakeLE(T* out) {
    absl::string_view bytes;
    if (!Take(sizeof(T), &bytes)) return false;
    T value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      value |= static_cast<T>(static_cast<unsigned char>(bytes[i])) << (8 * i);
    }
    *out = value;
    return true;
  }
  bool TakeLine(std::string* out) {
    const std::size_t end = data_.find('\n', pos_);
    if (end == absl::string_view::npos) return false;
    *out = std::string(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }

  absl::Status Push(Ref v) {
    if (stack_.size() >= limits_.max_stack) return Error("stack too deep");
    stack_.push_back(v);
    return absl::OkStatus();
  }
  absl::StatusOr<Ref> Pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) return Error("stack underflow");
    Ref v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<Ref> Top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) return Error("stack underflow");
    return stack_.back();
  }
  absl::StatusOr<std::vector<Ref>> PopMark() {
    if (marks_.empty()) return Error("no MARK on the stack");
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  absl::Status Memoize(std::uint64_t index) {
    if (memo_.size() >= limits_.max_memo && memo_.count(index) == 0) return Error("memo too large");
    auto top = Top();
    if (!top.ok()) return top.status();
    memo_[index] = *top;
    return absl::OkStatus();
  }
  absl::Status Recall(std::uint64_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) return Error(absl::StrCat("memo entry ", index, " was never stored"));
    return Push(it->second);
  }
  Ref Make(Kind kind) {
    arena_->values.push_back(std::make_unique<Value>());
    Ref v = arena_->values.back().get();
    v->kind = kind;
    return v;
  }
  Ref MakeInt(std::int64_t i) {
    Ref v = Make(Kind::kInt);
    v->integer = i;
    return v;
  }
  Ref MakeString(std::string s, Kind kind = Kind::kString) {
    Ref v = Make(kind);
    v->text = std::move(s);
    return v;
  }
  Ref Global(std::string module, std::string name) {
    Ref v = Make(Kind::kGlobal);
    v->text = absl::StrCat(module, ".", name);
    return v;
  }

  absl::Status SetItem(Value& dict, Ref key, Ref value);
  absl::Status AddItems(Value& target, std::vector<Ref> items);
  absl::StatusOr<Ref> Call(Ref callable, Ref args);
  absl::StatusOr<Ref> RebuildTensor(const std::vector<const Value*>& args);
  absl::StatusOr<Ref> Step(unsigned char op, bool* stop);

  absl::string_view data_;
  absl::string_view label_;
  const PersistentLoader& persistent_;
  const Limits& limits_;
  std::size_t pos_ = 0;
  std::size_t op_pos_ = 0;
  std::shared_ptr<Arena> arena_ = std::make_shared<Arena>();
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, Ref> memo_;
  int call_depth_ = 0;
};

absl::Status Machine::SetItem(Value& dict, Ref key, Ref value) {
  if (dict.kind == Kind::kObject) {  // a dict subclass placeholder: keep the pair as arguments
    if (dict.items.size() + 2 > limits_.max_container) return Error("object too large");
    dict.items.push_back(key);
    dict.items.push_back(value);
    return absl::OkStatus();
  }
  if (dict.kind != Kind::kDict) return Error(absl::StrCat("SETITEM on ", Describe(dict)));
  if (dict.entries.size() >= limits_.max_container) return Error("dict too large");
  if (key->kind == Kind::kString) {
    const auto [it, inserted] = dict.key_index.emplace(key->text, dict.entries.size());
    if (!inserted) {
      dict.entries[it->second].second = value;  // Python: a repeated key replaces the value
      return absl::OkStatus();
    }
  }
  dict.entries.emplace_back(key, value);
  return absl::OkStatus();
}

absl::Status Machine::AddItems(Value& target, std::vector<Ref> items) {
  if (target.kind != Kind::kList && target.kind != Kind::kObject) {
    return Error(absl::StrCat("APPEND to ", Describe(target)));
  }
  if (target.items.size() + items.size() > limits_.max_container) return Error("list too large");
  for (Ref item : items) target.items.push_back(item);
  return absl::OkStatus();
}

absl::StatusOr<Machine::Ref> Machine::RebuildTensor(const std::vector<const Value*>& args) {
  if (args.size() < 4 || args[0]->kind != Kind::kStorage || args[1]->kind != Kind::kInt ||
      args[2]->kind != Kind::kTuple || args[3]->kind != Kind::kTuple) {
    return Error("_rebuild_tensor_v2 expects (storage, offset, size tuple, stride tuple, ...)");
  }
  auto ref = std::make_shared<TensorRef>();
  ref->storage = args[0]->storage;
  ref->offset = args[1]->integer;
  for (const auto& d : args[2]->items) {
    if (d->kind != Kind::kInt) return Error("tensor size entries must be integers");
    ref->sizes.push_back(d->integer);
  }
  for (const auto& s : args[3]->items) {
    if (s->kind != Kind::kInt) return Error("tensor stride entries must be integers");
    ref->strides.push_back(s->integer);
  }
  if (ref->sizes.size() != ref->strides.size()) {
    return Error(absl::StrCat("tensor has ", ref->sizes.size(), " sizes but ", ref->strides.size(), " strides"));
  }
  Ref v = Make(Kind::kTensor);
  v->tensor = std::move(ref);
  return v;
}

absl::StatusOr<Machine::Ref> Machine::Call(Ref callable, Ref args) {
  if (callable->kind != Kind::kGlobal && callable->kind != Kind::kObject) {
    return Error(absl::StrCat("REDUCE on ", Describe(*callable), ", which is not callable"));
  }
  if (args->kind != Kind::kTuple) return Error(absl::StrCat("REDUCE arguments are ", Describe(*args)));
  const std::string& name = callable->text;
  if (IsDangerous(name)) {
    std::string shown;
    if (!args->items.empty() && args->items[0]->kind == Kind::kString) shown = args->items[0]->text.substr(0, 120);
    return absl::PermissionDeniedError(absl::StrCat(
        "'", label_, "' is not a plain checkpoint: its pickle calls ", name, "(", shown.empty() ? "..." : "'" + shown + "'",
        "), which would run code when loaded with torch.load; refused, nothing was run. Delete the file or get it "
        "as .safetensors"));
  }
  const auto& a = args->items;
  if (name == "collections.OrderedDict" || name == "collections.defaultdict") {
    Ref dict = Make(Kind::kDict);
    if (name == "collections.OrderedDict" && !a.empty() && a[0]->kind == Kind::kList) {
      for (const auto& pair : a[0]->items) {
        if (pair->kind != Kind::kTuple || pair->items.size() != 2) return Error("OrderedDict items must be pairs");
        if (auto s = SetItem(*dict, const_cast<Ref>(pair->items[0]), const_cast<Ref>(pair->items[1])); !s.ok()) return s;
      }
    }
    return dict;
  }
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return RebuildTensor(a);
  if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state" ||
      name == "torch.nn.parameter.Parameter") {
    if (a.empty()) return Error(absl::StrCat(name, " without arguments"));
    return const_cast<Ref>(a[0]);
  }
  if (name == "torch._tensor._rebuild_from_type_v2") {  // (func, type, args, state)
    if (a.size() < 3 || a[2]->kind != Kind::kTuple) return Error("_rebuild_from_type_v2 expects (func, type, args, ...)");
    if (++call_depth_ > 8) return Error("_rebuild_from_type_v2 nested too deeply");
    auto inner = Call(const_cast<Ref>(a[0]), const_cast<Ref>(a[2]));
    --call_depth_;
    return inner;
  }
  if (name == "torch.Size") {
    Ref t = Make(Kind::kTuple);
    if (a.size() == 1 && (a[0]->kind == Kind::kTuple || a[0]->kind == Kind::kList)) t->items = a[0]->items;
    return t;
  }
  if (name == "_codecs.encode") {  // protocol 2 bytes: _codecs.encode(text, "latin1")
    if (a.empty() || a[0]->kind != Kind::kString) return Error("_codecs.encode expects a string");
    std::string bytes;
    const bool latin1 = a.size() < 2 || (a[1]->kind == Kind::kString &&
                                         (a[1]->text == "latin1" || a[1]->text == "latin-1"));
    if (!latin1 || !Utf8ToLatin1(a[0]->text, bytes)) bytes = a[0]->text;
    return MakeString(std::move(bytes), Kind::kBytes);
  }
  if (name == "builtins.set" || name == "builtins.frozenset" || name == "__builtin__.set" ||
      name == "__builtin__.frozenset") {
    Ref list = Make(Kind::kList);
    if (!a.empty()) list->items = a[0]->items;
    return list;
  }
  if (name == "builtins.bytearray") {
    return MakeString(!a.empty() ? a[0]->text : "", Kind::kBytes);
  }
  // Anything else (a training callback, a numpy scalar, a config class): an inert placeholder. Nothing is run.
  Ref object = Make(Kind::kObject);
  object->text = name;
  object->items = a;
  return object;
}

absl::StatusOr<ValuePtr> Machine::Run(std::size_t* consumed) {
  bool stop = false;
  while (!stop) {
    op_pos_ = pos_;
    absl::string_view op;
    if (!Take(1, &op)) return Error("data ends before STOP (truncated pickle)");
    auto result = Step(static_cast<unsigned char>(op[0]), &stop);
    if (!result.ok()) return result.status();
    if (*result != nullptr) {
      if (auto s = Push(*result); !s.ok()) return s;
    }
  }
  if (consumed != nullptr) *consumed = pos_;
  if (stack_.size() != 1 || !marks_.empty()) {
    return Error(absl::StrCat("STOP with ", stack_.size(), " values on the stack (expected 1)"));
  }
  // The root shares ownership of the whole arena.
  return ValuePtr(arena_, stack_.back());
}

// Executes one opcode. Returns a value to push, or nullptr when the opcode pushes nothing itself.
absl::StatusOr<Machine::Ref> Machine::Step(unsigned char op, bool* stop) {
  switch (op) {
    case PROTO: {
      std::uint8_t version;
      if (!TakeLE(&version)) return Error("truncated PROTO");
      if (version > 5) return Error(absl::StrCat("unsupported pickle protocol ", int{version}));
      return nullptr;
    }
    case FRAME: {
      std::uint64_t length;
      if (!TakeLE(&length)) return Error("truncated FRAME");
      return nullptr;  // frames only group opcodes; the data follows inline
    }
    case STOP:
      *stop = true;
      return nullptr;
    case MARK:
      if (marks_.size() >= limits_.max_stack) return Error("too many MARKs");
      marks_.push_back(stack_.size());
      return nullptr;
    case POP: {
      if (!marks_.empty() && marks_.back() == stack_.size()) {  // POP of a bare MARK
        marks_.pop_back();
        return nullptr;
      }
      auto v = Pop();
      if (!v.ok()) return v.status();
      return nullptr;
    }
    case POP_MARK: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      return nullptr;
    }
    case DUP: {
      auto v = Top();
      if (!v.ok()) return v.status();
      return *v;
    }
    case NONE: return Make(Kind::kNone);
    case NEWTRUE:
    case NEWFALSE: {
      auto v = Make(Kind::kBool);
      v->boolean = op == NEWTRUE;
      return v;
    }
    case BININT: {
      std::uint32_t raw;
      if (!TakeLE(&raw)) return Error("truncated BININT");
      return MakeInt(static_cast<std::int32_t>(raw));
    }
    case BININT1: {
      std::uint8_t raw;
      if (!TakeLE(&raw)) return Error("truncated BININT1");
      return MakeInt(raw);
    }
    case BININT2: {
      std::uint16_t raw;
      if (!TakeLE(&raw)) return Error("truncated BININT2");
      return MakeInt(raw);
    }
    case LONG1:
    case LONG4: {
      std::uint32_t n = 0;
      if (op == LONG1) {
        std::uint8_t n8;
        if (!TakeLE(&n8)) return Error("truncated LONG1");
        n = n8;
      } else if (!TakeLE(&n)) {
        return Error("truncated LONG4");
      }
      absl::string_view bytes;
      if (!Take(n, &bytes)) return Error("LONG runs past the end of the data");
      if (n <= 8) {
        std::uint64_t u = 0;
        for (std::size_t i = 0; i < n; ++i) u |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
        if (n > 0 && n < 8 && (static_cast<unsigned char>(bytes[n - 1]) & 0x80)) u |= ~std::uint64_t{0} << (8 * n);
        return MakeInt(static_cast<std::int64_t>(u));
      }
      return MakeString(std::string(bytes), Kind::kBigInt);
    }
    case BINFLOAT: {
      absl::string_view bytes;
      if (!Take(8, &bytes)) return Error("truncated BINFLOAT");
      std::uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<unsigned char>(bytes[i]);  // big-endian
      auto v = Make(Kind::kFloat);
      std::memcpy(&v->real, &bits, 8);
      return v;
    }
    case INT:
    case LONG:
    case FLOAT: {
      std::string line;
      if (!TakeLine(&line)) return Error("truncated text number");
      std::string digits(absl::StripSuffix(absl::StripAsciiWhitespace(line), "L"));
      if (op == FLOAT) {
        auto v = Make(Kind::kFloat);
        if (!absl::SimpleAtod(digits, &v->real)) return Error(absl::StrCat("bad FLOAT '", digits.substr(0, 40), "'"));
        return v;
      }
      if (op == INT && (digits == "00" || digits == "01")) {
        auto v = Make(Kind::kBool);
        v->boolean = digits == "01";
        return v;
      }
      std::int64_t i;
      if (absl::SimpleAtoi(digits, &i)) return MakeInt(i);
      return MakeString(digits, Kind::kBigInt);
    }
    case BINUNICODE:
    case SHORT_BINUNICODE:
    case BINUNICODE8:
    case BINBYTES:
    case SHORT_BINBYTES:
    case BINBYTES8:
    case BYTEARRAY8:
    case BINSTRING:
    case SHORT_BINSTRING: {
      std::uint64_t n = 0;
      bool ok = true;
      if (op == SHORT_BINUNICODE || op == SHORT_BINBYTES || op == SHORT_BINSTRING) {
        std::uint8_t n8;
        ok = TakeLE(&n8);
        n = n8;
      } else if (op == BINUNICODE8 || op == BINBYTES8 || op == BYTEARRAY8) {
        ok = TakeLE(&n);
      } else {
        std::uint32_t n32 = 0;
        ok = TakeLE(&n32);
        n = n32;
        if (op == BINSTRING && static_cast<std::int32_t>(n32) < 0) return Error("negative BINSTRING length");
      }
      if (!ok) return Error("truncated string length");
      if (n > data_.size() - pos_) return Error(absl::StrCat("string of ", n, " bytes runs past the end of the data"));
      absl::string_view bytes;
      Take(static_cast<std::size_t>(n), &bytes);
      if (op == BINBYTES || op == SHORT_BINBYTES || op == BINBYTES8 || op == BYTEARRAY8) {
        return MakeString(std::string(bytes), Kind::kBytes);
      }
      if (op == BINSTRING || op == SHORT_BINSTRING) return MakeString(Latin1ToUtf8(bytes));  // Python 2 str
      return MakeString(std::string(bytes));
    }
    case STRING: {
      std::string line;
      if (!TakeLine(&line)) return Error("truncated STRING");
      line = std::string(absl::StripAsciiWhitespace(line));
      if (line.size() < 2 || (line.front() != '\'' && line.front() != '"') || line.back() != line.front()) {
        return Error("STRING is not quoted");
      }
      std::string out;
      for (std::size_t i = 1; i + 1 < line.size(); ++i) {
        if (line[i] != '\\' || i + 2 >= line.size()) {
          out.push_back(line[i]);
          continue;
        }
        const char e = line[++i];
        if (e == 'n') out.push_back('\n');
        else if (e == 't') out.push_back('\t');
        else if (e == 'r') out.push_back('\r');
        else if (e == 'x' && i + 2 < line.size()) {
          int value = 0;
          if (!absl::SimpleHexAtoi(line.substr(i + 1, 2), &value)) return Error("bad \\x escape in STRING");
          out.push_back(static_cast<char>(value));
          i += 2;
        } else out.push_back(e);
      }
      return MakeString(Latin1ToUtf8(out));
    }
    case UNICODE: {  // raw-unicode-escape
      std::string line;
      if (!TakeLine(&line)) return Error("truncated UNICODE");
      std::string out;
      for (std::size_t i = 0; i < line.size(); ++i) {
        if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == 'u' || line[i + 1] == 'U')) {
          const std::size_t digits = line[i + 1] == 'u' ? 4 : 8;
          std::uint32_t cp = 0;
          if (i + 2 + digits > line.size() || !absl::SimpleHexAtoi(line.substr(i + 2, digits), &cp) || cp > 0x10FFFF) {
            return Error("bad \\u escape in UNICODE");
          }
          AppendUtf8(cp, out);
          i += 1 + digits;
        } else {
          AppendUtf8(static_cast<unsigned char>(line[i]), out);
        }
      }
      return MakeString(std::move(out));
    }
    case EMPTY_TUPLE: return Make(Kind::kTuple);
    case EMPTY_LIST: return Make(Kind::kList);
    case EMPTY_DICT: return Make(Kind::kDict);
    case EMPTY_SET: return Make(Kind::kList);
    case TUPLE1:
    case TUPLE2:
    case TUPLE3: {
      const int n = op - TUPLE1 + 1;
      auto t = Make(Kind::kTuple);
      t->items.resize(static_cast<std::size_t>(n));
      for (int i = n - 1; i >= 0; --i) {
        auto v = Pop();
        if (!v.ok()) return v.status();
        t->items[static_cast<std::size_t>(i)] = *std::move(v);
      }
      return t;
    }
    case TUPLE:
    case LIST:
    case FROZENSET: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      auto v = Make(op == TUPLE ? Kind::kTuple : Kind::kList);
      v->items.assign(items->begin(), items->end());
      return v;
    }
    case DICT: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (items->size() % 2 != 0) return Error("DICT with an odd number of items");
      auto dict = Make(Kind::kDict);
      for (std::size_t i = 0; i < items->size(); i += 2) {
        if (auto s = SetItem(*dict, (*items)[i], (*items)[i + 1]); !s.ok()) return s;
      }
      return dict;
    }
    case APPEND: {
      auto v = Pop();
      if (!v.ok()) return v.status();
      auto target = Top();
      if (!target.ok()) return target.status();
      if (auto s = AddItems(**target, {*std::move(v)}); !s.ok()) return s;
      return nullptr;
    }
    case APPENDS:
    case ADDITEMS: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      auto target = Top();
      if (!target.ok()) return target.status();
      if (auto s = AddItems(**target, *std::move(items)); !s.ok()) return s;
      return nullptr;
    }
    case SETITEM: {
      auto value = Pop();
      if (!value.ok()) return value.status();
      auto key = Pop();
      if (!key.ok()) return key.status();
      auto dict = Top();
      if (!dict.ok()) return dict.status();
      if (auto s = SetItem(**dict, *std::move(key), *std::move(value)); !s.ok()) return s;
      return nullptr;
    }
    case SETITEMS: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (items->size() % 2 != 0) return Error("SETITEMS with an odd number of items");
      auto dict = Top();
      if (!dict.ok()) return dict.status();
      for (std::size_t i = 0; i < items->size(); i += 2) {
        if (auto s = SetItem(**dict, (*items)[i], (*items)[i + 1]); !s.ok()) return s;
      }
      return nullptr;
    }
    case PUT:
    case GET: {
      std::string line;
      if (!TakeLine(&line)) return Error("truncated PUT/GET");
      std::uint64_t index;
      if (!absl::SimpleAtoi(line, &index)) return Error("bad memo index");
      if (op == PUT) {
        if (auto s = Memoize(index); !s.ok()) return s;
        return nullptr;
      }
      if (auto s = Recall(index); !s.ok()) return s;
      return nullptr;
    }
    case BINPUT:
    case BINGET: {
      std::uint8_t index;
      if (!TakeLE(&index)) return Error("truncated memo index");
      if (auto s = op == BINPUT ? Memoize(index) : Recall(index); !s.ok()) return s;
      return nullptr;
    }
    case LONG_BINPUT:
    case LONG_BINGET: {
      std::uint32_t index;
      if (!TakeLE(&index)) return Error("truncated memo index");
      if (auto s = op == LONG_BINPUT ? Memoize(index) : Recall(index); !s.ok()) return s;
      return nullptr;
    }
    case MEMOIZE:
      if (auto s = Memoize(memo_.size()); !s.ok()) return s;
      return nullptr;
    case GLOBAL: {
      std::string module, name;
      if (!TakeLine(&module) || !TakeLine(&name)) return Error("truncated GLOBAL");
      return Global(std::move(module), std::move(name));
    }
    case STACK_GLOBAL: {
      auto name = Pop();
      if (!name.ok()) return name.status();
      auto module = Pop();
      if (!module.ok()) return module.status();
      if ((*module)->kind != Kind::kString || (*name)->kind != Kind::kString) {
        return Error("STACK_GLOBAL needs two strings");
      }
      return Global((*module)->text, (*name)->text);
    }
    case REDUCE: {
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto callable = Pop();
      if (!callable.ok()) return callable.status();
      return Call(*callable, *args);
    }
    case NEWOBJ: {
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto cls = Pop();
      if (!cls.ok()) return cls.status();
      return Call(*cls, *args);
    }
    case NEWOBJ_EX: {
      auto kwargs = Pop();
      if (!kwargs.ok()) return kwargs.status();
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto cls = Pop();
      if (!cls.ok()) return cls.status();
      return Call(*cls, *args);
    }
    case INST:
    case OBJ: {
      Ref cls = nullptr;
      if (op == INST) {
        std::string module, name;
        if (!TakeLine(&module) || !TakeLine(&name)) return Error("truncated INST");
        cls = Global(std::move(module), std::move(name));
      }
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (op == OBJ) {
        if (items->empty()) return Error("OBJ without a class");
        cls = (*items)[0];
        items->erase(items->begin());
      }
      Ref args = Make(Kind::kTuple);
      args->items.assign(items->begin(), items->end());
      return Call(cls, args);
    }
    case BUILD: {
      auto state = Pop();
      if (!state.ok()) return state.status();
      auto target = Top();
      if (!target.ok()) return target.status();
      if ((*target)->kind == Kind::kObject) (*target)->items.push_back(*std::move(state));
      // BUILD on anything else sets Python attributes we do not model; the state is dropped.
      return nullptr;
    }
    case BINPERSID:
    case PERSID: {
      Ref pid = nullptr;
      if (op == PERSID) {
        std::string line;
        if (!TakeLine(&line)) return Error("truncated PERSID");
        pid = MakeString(std::move(line));
      } else {
        auto v = Pop();
        if (!v.ok()) return v.status();
        pid = *v;
      }
      if (!persistent_) return Error("persistent id in a pickle that has no storages");
      auto resolved = persistent_(*pid);
      if (!resolved.ok()) return resolved.status();
      Ref storage = Make(Kind::kStorage);
      storage->storage = *std::move(resolved);
      return storage;
    }
    case EXT1:
    case EXT2:
    case EXT4:
      return Error("copyreg extension codes are not supported");
    case NEXT_BUFFER:
    case READONLY_BUFFER:
      return Error("out-of-band buffers are not supported");
    default:
      return Error(absl::StrCat("unknown opcode 0x", absl::Hex(op)));
  }
}

}  // namespace

const Value* Value::Get(absl::string_view key) const {
  const auto it = key_index.find(std::string(key));
  return it == key_index.end() ? nullptr : entries[it->second].second;
}

std::string Describe(const Value& value) {
  switch (value.kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return value.boolean ? "True" : "False";
    case Kind::kInt: return absl::StrCat("int ", value.integer);
    case Kind::kBigInt: return "a large int";
    case Kind::kFloat: return absl::StrCat("float ", value.real);
    case Kind::kString: return absl::StrCat("string '", value.text.substr(0, 60), "'");
    case Kind::kBytes: return absl::StrCat("bytes(", value.text.size(), ")");
    case Kind::kTuple: return absl::StrCat("tuple(", value.items.size(), ")");
    case Kind::kList: return absl::StrCat("list(", value.items.size(), ")");
    case Kind::kDict: return absl::StrCat("dict(", value.entries.size(), ")");
    case Kind::kGlobal: return absl::StrCat("global ", value.text);
    case Kind::kObject: return absl::StrCat("placeholder ", value.text);
    case Kind::kStorage: return absl::StrCat("storage ", value.storage ? value.storage->key : "?");
    case Kind::kTensor: return absl::StrCat("tensor[", absl::StrJoin(value.tensor->sizes, ", "), "]");
  }
  return "?";
}

bool StorageDType(absl::string_view global, DType* dtype) {
  static constexpr std::pair<const char*, DType> kTypes[] = {
      {"torch.FloatStorage", DType::kF32},  {"torch.HalfStorage", DType::kF16},  {"torch.BFloat16Storage", DType::kBF16},
      {"torch.DoubleStorage", DType::kF64}, {"torch.LongStorage", DType::kI64},  {"torch.IntStorage", DType::kI32},
      {"torch.ShortStorage", DType::kI16},  {"torch.CharStorage", DType::kI8},   {"torch.ByteStorage", DType::kU8},
      {"torch.BoolStorage", DType::kBool},
  };
  for (const auto& [name, type] : kTypes) {
    if (global == name) {
      *dtype = type;
      return true;
    }
  }
  return false;
}

absl::StatusOr<ValuePtr> Unpickle(absl::string_view data, absl::string_view label, const PersistentLoader& persistent,
                                  std::size_t* consumed, const Limits& limits) {
  Machine machine(data, label, persistent, limits);
  return machine.Run(consumed);
}

}  // namespace atelier::engine::pickle
