#include "client/kvwctl/json_out.h"

#include <charconv>
#include <cmath>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"

namespace kvwarden::kvwctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

void Quote(std::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\r':
        *out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

void Double(double v, std::string* out) {
  if (std::isnan(v)) {
    *out += "\"NaN\"";
  } else if (std::isinf(v)) {
    *out += v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  } else {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest that reads back
    out->append(buf, r.ptr);
  }
}

class Writer {
 public:
  Writer(bool pretty, std::string* out) : pretty_(pretty), out_(out) {}

  void Object(const Message& m, int depth) {
    const Reflection* r = m.GetReflection();
    const google::protobuf::Descriptor* d = m.GetDescriptor();
    *out_ += '{';
    bool first = true;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      // Unset messages and unset oneof members are left out; every other field is there.
      if (!f->is_repeated() &&
          (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE || f->containing_oneof() != nullptr) &&
          !r->HasField(m, f)) {
        continue;
      }
      if (!first) *out_ += ',';
      first = false;
      Newline(depth + 1);
      Quote(f->name(), out_);
      *out_ += pretty_ ? ": " : ":";
      if (f->is_repeated()) {
        const int n = r->FieldSize(m, f);
        *out_ += '[';
        for (int k = 0; k < n; ++k) {
          if (k) *out_ += pretty_ ? ", " : ",";
          Value(m, f, k, depth + 1);
        }
        *out_ += ']';
      } else {
        Value(m, f, -1, depth + 1);
      }
    }
    if (!first) Newline(depth);
    *out_ += '}';
  }

 private:
  void Newline(int depth) {
    if (!pretty_) return;
    *out_ += '\n';
    out_->append(2 * depth, ' ');
  }

  // Field `f` of `m`: element `k` of a repeated field, or the field itself when k < 0.
  void Value(const Message& m, const FieldDescriptor* f, int k, int depth) {
    const Reflection* r = m.GetReflection();
    const bool rep = k >= 0;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        absl::StrAppend(out_, rep ? r->GetRepeatedInt32(m, f, k) : r->GetInt32(m, f));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        absl::StrAppend(out_, rep ? r->GetRepeatedInt64(m, f, k) : r->GetInt64(m, f));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        absl::StrAppend(out_, rep ? r->GetRepeatedUInt32(m, f, k) : r->GetUInt32(m, f));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        absl::StrAppend(out_, rep ? r->GetRepeatedUInt64(m, f, k) : r->GetUInt64(m, f));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        Double(rep ? r->GetRepeatedDouble(m, f, k) : r->GetDouble(m, f), out_);
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        Double(rep ? r->GetRepeatedFloat(m, f, k) : r->GetFloat(m, f), out_);
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        *out_ += (rep ? r->GetRepeatedBool(m, f, k) : r->GetBool(m, f)) ? "true" : "false";
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const google::protobuf::EnumValueDescriptor* e =
            rep ? r->GetRepeatedEnum(m, f, k) : r->GetEnum(m, f);
        Quote(e->name(), out_);
        break;
      }
      case FieldDescriptor::CPPTYPE_STRING: {
        const std::string s = rep ? r->GetRepeatedString(m, f, k) : r->GetString(m, f);
        if (f->type() == FieldDescriptor::TYPE_BYTES) {
          Quote(absl::Base64Escape(s), out_);
        } else {
          Quote(s, out_);
        }
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        Object(rep ? r->GetRepeatedMessage(m, f, k) : r->GetMessage(m, f), depth);
        break;
    }
  }

  const bool pretty_;
  std::string* out_;
};

}  // namespace

std::string JsonString(std::string_view s) {
  std::string out;
  Quote(s, &out);
  return out;
}

std::string ToJson(const Message& m, bool pretty) {
  std::string out;
  Writer(pretty, &out).Object(m, 0);
  if (pretty) out += '\n';
  return out;
}

}  // namespace kvwarden::kvwctl
