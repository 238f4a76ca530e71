// Jinja lexer and parser. The whitespace rules follow Jinja2's lexer with trim_blocks=True, lstrip_blocks=True and
// keep_trailing_newline=False (transformers' settings); the grammar and operator precedence follow jinja2/parser.py.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "jinja_ast.hpp"
#include "unicode.hpp"

namespace lal::lm::jinja {

void fail(const std::string& origin, Pos pos, const std::string& message) {
  throw JinjaError(origin + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) + ": " + message);
}

namespace {

constexpr int kMaxNesting = 256;  // expression and block nesting; deeper templates are refused, not overflowed

// Length in bytes of the whitespace code point at s[i], or 0 (the source is valid UTF-8).
std::size_t space_at(std::string_view s, std::size_t i) {
  std::size_t next = i;
  return is_python_space(text::next_code_point(s, next)) ? next - i : 0;
}

std::size_t skip_spaces(std::string_view s, std::size_t i) {
  while (i < s.size()) {
    const std::size_t n = space_at(s, i);
    if (!n) break;
    i += n;
  }
  return i;
}

// Python's str.rstrip() (Unicode whitespace).
std::string rstrip_spaces(std::string_view s) {
  std::size_t end = 0;
  for (std::size_t i = 0; i < s.size();)
    if (!is_python_space(text::next_code_point(s, i))) end = i;
  return std::string(s.substr(0, end));
}

struct Token {
  enum class Type { Name, String, Int, Float, Op, End };
  Type type = Type::End;
  std::string text;  // name, operator, or the decoded string
  std::int64_t integer = 0;
  double number = 0;
  Pos pos;
};

struct Piece {
  enum class Kind { Text, Var, Block };
  Kind kind;
  std::string text;
  std::vector<Token> tokens;  // ends with an End token
  Pos pos;
};

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& origin) : origin_(origin) {
    if (const std::size_t bad = text::first_invalid_utf8(source); bad != source.size())
      throw JinjaError(origin + ": the template is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
    // Jinja normalises newlines and drops one trailing newline (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (std::size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Piece> run() {
    std::vector<Piece> out;
    std::size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      std::size_t start = pos;
      while (true) {
        start = src_.find('{', start);
        if (start == std::string::npos || start + 1 >= src_.size()) {
          start = std::string::npos;
          break;
        }
        const char c = src_[start + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++start;
      }
      if (start == std::string::npos) {
        emit_text(out, src_.substr(pos), position(pos));
        break;
      }
      std::string text = src_.substr(pos, start - pos);
      const char kind = src_[start + 1];
      std::size_t inner = start + 2;
      char sign = 0;
      if (inner < src_.size() && (src_[inner] == '-' || src_[inner] == '+')) sign = src_[inner++];
      text = left_strip(std::move(text), sign, kind != '{', line_starting);
      emit_text(out, std::move(text), position(pos));
      const Pos tag_pos = position(start);
      if (kind == '#') {
        const std::size_t close = src_.find("#}", inner);
        if (close == std::string::npos) fail(origin_, tag_pos, "comment {# is never closed with #}");
        const char end_sign = close > inner && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
        pos = after_tag(close + 2, end_sign, true, line_starting);
        continue;
      }
      Piece piece;
      piece.kind = kind == '{' ? Piece::Kind::Var : Piece::Kind::Block;
      piece.pos = tag_pos;
      char end_sign = 0;
      std::size_t end = tokenize(inner, piece.kind == Piece::Kind::Var, piece.tokens, end_sign, tag_pos);
      pos = after_tag(end, end_sign, piece.kind == Piece::Kind::Block, line_starting);
      if (piece.kind == Piece::Kind::Block && piece.tokens.size() == 2 && piece.tokens[0].type == Token::Type::Name &&
          piece.tokens[0].text == "raw") {
        pos = read_raw(out, pos, tag_pos, line_starting);
        continue;
      }
      out.push_back(std::move(piece));
    }
    return out;
  }

 private:
  Pos position(std::size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const std::size_t line = static_cast<std::size_t>(it - line_starts_.begin());
    return Pos{static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  static void emit_text(std::vector<Piece>& out, std::string text, Pos pos) {
    if (text.empty()) return;
    Piece p;
    p.kind = Piece::Kind::Text;
    p.text = std::move(text);
    p.pos = pos;
    out.push_back(std::move(p));
  }

  // The text before a tag: `-` strips all trailing whitespace; otherwise lstrip_blocks removes the spaces and tabs
  // between the line start and a block or comment tag.
  static std::string left_strip(std::string text, char sign, bool block_or_comment, bool line_starting) {
    if (sign == '-') return rstrip_spaces(text);
    if (sign == '+' || !block_or_comment) return text;
    const std::size_t nl = text.rfind('\n');
    const std::size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos > 0 || line_starting) {
      if (text.find_first_not_of(" \t", l_pos) == std::string::npos) text.resize(l_pos);
    }
    return text;
  }

  // After a tag's closing delimiter (ending just before `pos`): `-` eats all following whitespace; trim_blocks eats
  // one newline after a block or comment tag. Sets line_starting as Jinja's lexer does (the match ended in "\n").
  std::size_t after_tag(std::size_t pos, char sign, bool block_or_comment, bool& line_starting) const {
    line_starting = false;
    if (sign == '-') {
      const std::size_t end = skip_spaces(src_, pos);
      if (end > pos) line_starting = src_[end - 1] == '\n';
      return end;
    }
    if (sign != '+' && block_or_comment && pos < src_.size() && src_[pos] == '\n') {
      line_starting = true;
      return pos + 1;
    }
    return pos;
  }

  std::size_t read_raw(std::vector<Piece>& out, std::size_t pos, Pos tag_pos, bool& line_starting) {
    std::size_t search = pos;
    while (true) {
      const std::size_t open = src_.find("{%", search);
      if (open == std::string::npos) fail(origin_, tag_pos, "{% raw %} is never closed with {% endraw %}");
      std::size_t i = open + 2;
      char sign = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) sign = src_[i++];
      i = skip_spaces(src_, i);
      if (src_.compare(i, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      i = skip_spaces(src_, i + 6);
      char end_sign = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) end_sign = src_[i++];
      if (src_.compare(i, 2, "%}") != 0) {
        search = open + 2;
        continue;
      }
      emit_text(out, left_strip(src_.substr(pos, open - pos), sign, true, line_starting), position(pos));
      return after_tag(i + 2, end_sign, true, line_starting);
    }
  }

  std::size_t tokenize(std::size_t i, bool variable, std::vector<Token>& tokens, char& end_sign, Pos tag_pos) {
    int depth = 0;
    const char* close = variable ? "}}" : "%}";
    while (true) {
      i = skip_spaces(src_, i);
      if (i >= src_.size()) fail(origin_, tag_pos, std::string("tag is never closed with ") + close);
      if (depth == 0) {
        if ((src_[i] == '-' || src_[i] == '+') && src_.compare(i + 1, 2, close) == 0) {
          end_sign = src_[i];
          break;
        }
        if (src_.compare(i, 2, close) == 0) break;
      }
      Token t;
      t.pos = position(i);
      const char c = src_[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t j = i;
        while (j < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
        t.type = Token::Type::Name;
        t.text = src_.substr(i, j - i);
        i = j;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        i = read_number(i, t, !tokens.empty() && tokens.back().type == Token::Type::Op && tokens.back().text == ".");
      } else if (c == '\'' || c == '"') {
        i = read_string(i, t);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                           "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",", ";"};
        bool found = false;
        for (const char* op : kOps) {
          const std::size_t n = std::strlen(op);
          if (src_.compare(i, n, op) == 0) {
            t.type = Token::Type::Op;
            t.text = op;
            i += n;
            found = true;
            break;
          }
        }
        if (!found) fail(origin_, t.pos, std::string("unexpected character '") + c + "'");
        if (t.text == "(" || t.text == "[" || t.text == "{") ++depth;
        if ((t.text == ")" || t.text == "]" || t.text == "}") && depth > 0) --depth;
      }
      tokens.push_back(std::move(t));
    }
    Token end;
    end.type = Token::Type::End;
    end.pos = position(i);
    tokens.push_back(end);
    return i + (end_sign ? 1 : 0) + 2;
  }

  std::size_t read_number(std::size_t i, Token& t, bool after_dot) {
    auto digits = [&](std::size_t j) {
      while (j < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) ++j;
      return j;
    };
    std::size_t j = digits(i);
    bool is_float = false;
    if (!after_dot && j + 1 < src_.size() && src_[j] == '.' && std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
      j = digits(j + 1);
      is_float = true;
    }
    if (!after_dot && j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
      std::size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        j = digits(k);
        is_float = true;
      }
    }
    std::string text = src_.substr(i, j - i);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    if (is_float) {
      t.type = Token::Type::Float;
      // As Python's float(): past the range is inf, below it 0 or a denormal (std::stod would throw out_of_range;
      // found by fuzz_jinja, tests/fuzz/corpus/jinja/repro-float-literal-out-of-range).
      t.number = std::strtod(text.c_str(), nullptr);
    } else {
      t.type = Token::Type::Int;
      try {
        t.integer = std::stoll(text);
      } catch (const std::out_of_range&) {
        fail(origin_, t.pos, "integer literal " + text + " is out of the 64-bit range");
      }
    }
    t.text = text;
    return j;
  }

  // A string literal, unescaped as Python's "unicode-escape" codec does (Jinja2 uses it).
  std::size_t read_string(std::size_t i, Token& t) {
    const char quote = src_[i];
    std::string out;
    std::size_t j = i + 1;
    auto hex = [&](std::size_t at, int n) -> char32_t {
      if (at + n > src_.size()) fail(origin_, position(at), "truncated \\x/\\u escape in a string literal");
      char32_t v = 0;
      for (int k = 0; k < n; ++k) {
        const char h = src_[at + k];
        if (!std::isxdigit(static_cast<unsigned char>(h)))
          fail(origin_, position(at), "invalid \\x/\\u escape in a string literal");
        v = v * 16 +
            static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      return v;
    };
    while (true) {
      if (j >= src_.size()) fail(origin_, t.pos, "string literal is never closed");
      const char c = src_[j];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++j;
        continue;
      }
      if (j + 1 >= src_.size()) fail(origin_, t.pos, "string literal is never closed");
      const char e = src_[j + 1];
      j += 2;
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': text::append_utf8(out, hex(j, 2)), j += 2; break;
        case 'u': text::append_utf8(out, hex(j, 4)), j += 4; break;
        case 'U': text::append_utf8(out, hex(j, 8)), j += 8; break;
        case 'N': fail(origin_, t.pos, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && j < src_.size() && src_[j] >= '0' && src_[j] <= '7'; ++k, ++j)
              v = v * 8 + static_cast<char32_t>(src_[j] - '0');
            text::append_utf8(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    t.type = Token::Type::String;
    t.text = std::move(out);
    return j + 1;
  }

  std::string src_;
  const std::string& origin_;
  std::vector<std::size_t> line_starts_;
};

// ---- parser ------------------------------------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::vector<Piece> pieces, const std::string& origin) : pieces_(std::move(pieces)), origin_(origin) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, end, Pos{});
    return body;
  }

 private:
  // ---- statements ----
  Body parse_body(const std::vector<std::string>& ends, std::string& found_end, Pos opened_at) {
    if (++block_depth_ > kMaxNesting) fail(origin_, opened_at, "blocks are nested too deeply");
    Body body;
    while (index_ < pieces_.size()) {
      Piece& piece = pieces_[index_];
      if (piece.kind == Piece::Kind::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Text;
        n->pos = piece.pos;
        n->text = std::move(piece.text);
        body.push_back(std::move(n));
        ++index_;
        continue;
      }
      tokens_ = &piece.tokens;
      at_ = 0;
      if (piece.kind == Piece::Kind::Var) {
        ++index_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::Output;
        n->pos = piece.pos;
        n->expr = parse_tuple();
        expect_end();
        body.push_back(std::move(n));
        continue;
      }
      const Token& kw = peek();
      if (kw.type != Token::Type::Name) fail(origin_, kw.pos, "expected a statement name after {%");
      if (std::find(ends.begin(), ends.end(), kw.text) != ends.end()) {
        found_end = kw.text;
        --block_depth_;
        return body;  // the caller consumes the end tag
      }
      ++index_;
      body.push_back(parse_statement(piece.pos));
    }
    if (!ends.empty())
      fail(origin_, opened_at, "block opened here is never closed (expected {% " + ends.back() + " %})");
    --block_depth_;
    return body;
  }

  // Switches to the tokens of the end tag the body stopped at, and consumes it.
  void take_end_tag() {
    Piece& piece = pieces_[index_++];
    tokens_ = &piece.tokens;
    at_ = 0;
    next();  // the keyword
  }

  NodePtr parse_statement(Pos pos) {
    const std::string kw = next().text;
    auto n = std::make_unique<Node>();
    n->pos = pos;
    if (kw == "if") {
      n->kind = Node::Kind::If;
      ExprPtr cond = parse_tuple(false);
      expect_end();
      while (true) {
        std::string end;
        Body body = parse_body({"elif", "else", "endif"}, end, pos);
        n->branches.emplace_back(std::move(cond), std::move(body));
        take_end_tag();
        if (end == "elif") {
          cond = parse_tuple(false);
          expect_end();
        } else if (end == "else") {
          expect_end();
          std::string end2;
          Body else_body = parse_body({"endif"}, end2, pos);
          n->branches.emplace_back(nullptr, std::move(else_body));
          take_end_tag();
          expect_end();
          break;
        } else {
          expect_end();
          break;
        }
      }
    } else if (kw == "for") {
      n->kind = Node::Kind::For;
      n->target = parse_assign_target(false);
      expect_name("in");
      n->expr = parse_tuple(false);
      if (accept_name("if")) n->condition = parse_expression(true);
      if (accept_name("recursive")) fail(origin_, pos, "recursive for loops are not supported");
      expect_end();
      std::string end;
      n->body = parse_body({"else", "endfor"}, end, pos);
      take_end_tag();
      expect_end();
      if (end == "else") {
        n->else_body = parse_body({"endfor"}, end, pos);
        take_end_tag();
        expect_end();
      }
    } else if (kw == "set") {
      n->target = parse_assign_target(true);
      if (accept_op("=")) {
        n->kind = Node::Kind::Set;
        n->expr = parse_tuple();
        expect_end();
      } else {
        n->kind = Node::Kind::SetBlock;
        if (!n->target.attribute.empty() || n->target.tuple)
          fail(origin_, pos, "a block {% set %} needs a single name");
        if (peek().type == Token::Type::Op && peek().text == "|")
          fail(origin_, pos, "filters on a block {% set %} are not supported");
        expect_end();
        std::string end;
        n->body = parse_body({"endset"}, end, pos);
        take_end_tag();
        expect_end();
      }
    } else if (kw == "macro") {
      n->kind = Node::Kind::Macro;
      n->macro = std::make_shared<MacroDef>();
      n->macro->name = expect_name_token().text;
      parse_signature(*n->macro);
      expect_end();
      std::string end;
      n->macro->body = parse_body({"endmacro"}, end, pos);
      take_end_tag();
      if (peek().type == Token::Type::Name) next();
      expect_end();
    } else if (kw == "call") {
      n->kind = Node::Kind::CallBlock;
      n->macro = std::make_shared<MacroDef>();
      n->macro->name = "caller";
      if (peek().type == Token::Type::Op && peek().text == "(") parse_signature(*n->macro);
      n->expr = parse_expression(true);
      if (n->expr->kind != Expr::Kind::Call) fail(origin_, pos, "{% call %} needs a macro call");
      expect_end();
      std::string end;
      n->macro->body = parse_body({"endcall"}, end, pos);
      take_end_tag();
      expect_end();
    } else if (kw == "filter") {
      n->kind = Node::Kind::FilterBlock;
      auto placeholder = std::make_unique<Expr>();
      placeholder->kind = Expr::Kind::Name;
      placeholder->name = kFilterBlockBody;
      placeholder->pos = pos;
      n->expr = parse_filters(std::move(placeholder), /*leading_bar=*/false);
      expect_end();
      std::string end;
      n->body = parse_body({"endfilter"}, end, pos);
      take_end_tag();
      expect_end();
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Kind::Break : Node::Kind::Continue;
      expect_end();
    } else if (kw == "generation") {
      n->kind = Node::Kind::Generation;
      expect_end();
      std::string end;
      n->body = parse_body({"endgeneration"}, end, pos);
      take_end_tag();
      expect_end();
    } else if (kw == "elif" || kw == "else" || kw.rfind("end", 0) == 0) {
      fail(origin_, pos, "unexpected {% " + kw + " %} (no open block it could close)");
    } else {
      fail(origin_, pos,
           "unsupported statement {% " + kw +
               " %} (supported: if, for, set, macro, call, filter, break, continue, generation, raw)");
    }
    return n;
  }

  void parse_signature(MacroDef& m) {
    expect_op("(");
    while (!accept_op(")")) {
      if (!m.params.empty()) expect_op(",");
      if (accept_op(")")) break;
      const std::string name = expect_name_token().text;
      ExprPtr def;
      if (accept_op("=")) def = parse_expression(true);
      m.params.emplace_back(name, std::move(def));
    }
  }

  AssignTarget parse_assign_target(bool allow_attribute) {
    AssignTarget t;
    const Token name = expect_name_token();
    if (allow_attribute && peek().type == Token::Type::Op && peek().text == ".") {
      next();
      t.names.push_back(name.text);
      t.attribute = expect_name_token().text;
      return t;
    }
    t.names.push_back(name.text);
    while (accept_op(",")) {
      t.tuple = true;
      if (peek().type != Token::Type::Name) break;
      t.names.push_back(expect_name_token().text);
    }
    for (const auto& n : t.names)
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None")
        fail(origin_, name.pos, "cannot assign to " + n);
    return t;
  }

  // ---- expressions ----
  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, Pos pos) : p(parser) {
      if (++p.expr_depth_ > kMaxNesting) fail(p.origin_, pos, "expression is nested too deeply");
    }
    ~DepthGuard() { --p.expr_depth_; }
  };

  ExprPtr make(Expr::Kind kind, Pos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  ExprPtr parse_tuple(bool with_condexpr = true, bool explicit_parens = false) {
    const Pos pos = peek().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!accept_op(",")) break;
        is_tuple = true;
      }
      if (tuple_ends()) {
        if (items.empty() && !explicit_parens) fail(origin_, peek().pos, "expected an expression");
        break;
      }
      items.push_back(parse_expression(with_condexpr));
    }
    if (!is_tuple && items.size() == 1) return std::move(items[0]);
    if (!is_tuple && items.empty() && !explicit_parens) fail(origin_, pos, "expected an expression");
    auto t = make(Expr::Kind::TupleLiteral, pos);
    t->children = std::move(items);
    return t;
  }

  bool tuple_ends() const {
    const Token& t = peek();
    if (t.type == Token::Type::End) return true;
    if (t.type == Token::Type::Op && (t.text == ")" || t.text == "]" || t.text == "}" || t.text == "=")) return true;
    if (t.type == Token::Type::Name && (t.text == "if" || t.text == "recursive")) return true;
    return false;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    DepthGuard guard(*this, peek().pos);
    ExprPtr expr = parse_or();
    while (peek_name("if")) {
      const Pos pos = next().pos;
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (accept_name("else")) otherwise = parse_condexpr();
      auto c = make(Expr::Kind::Conditional, pos);
      c->children.push_back(std::move(expr));
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(otherwise));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (peek_name("or")) {
      const Pos pos = next().pos;
      auto e = make(Expr::Kind::Or, pos);
      e->children.push_back(std::move(left));
      e->children.push_back(parse_and());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (peek_name("and")) {
      const Pos pos = next().pos;
      auto e = make(Expr::Kind::And, pos);
      e->children.push_back(std::move(left));
      e->children.push_back(parse_not());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (peek_name("not")) {
      const Pos pos = next().pos;
      DepthGuard guard(*this, pos);
      auto e = make(Expr::Kind::Unary, pos);
      e->name = "not";
      e->children.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  static bool is_comparison(const Token& t) {
    return t.type == Token::Type::Op &&
           (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" || t.text == "<=" || t.text == ">=");
  }

  ExprPtr parse_compare() {
    ExprPtr expr = parse_math1();
    const Token& t = peek();
    std::string op;
    if (is_comparison(t)) {
      op = t.text;
    } else if (t.type == Token::Type::Name && t.text == "in") {
      op = "in";
    } else if (t.type == Token::Type::Name && t.text == "not" && peek(1).type == Token::Type::Name &&
               peek(1).text == "in") {
      op = "not in";
      next();
    } else {
      return expr;
    }
    const Pos pos = next().pos;
    auto e = make(Expr::Kind::Binary, pos);
    e->name = op;
    e->children.push_back(std::move(expr));
    e->children.push_back(parse_math1());
    const Token& after = peek();
    if (is_comparison(after) ||
        (after.type == Token::Type::Name &&
         (after.text == "in" || (after.text == "not" && peek(1).type == Token::Type::Name && peek(1).text == "in"))))
      fail(origin_, after.pos, "chained comparisons (a < b < c) are not supported; write them with `and`");
    return e;
  }

  ExprPtr binary(std::string op, Pos pos, ExprPtr left, ExprPtr right) {
    auto e = make(Expr::Kind::Binary, pos);
    e->name = std::move(op);
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (peek().type == Token::Type::Op && (peek().text == "+" || peek().text == "-")) {
      const Token op = next();
      left = binary(op.text, op.pos, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (peek().type == Token::Type::Op && peek().text == "~") {
      const Token op = next();
      left = binary("~", op.pos, std::move(left), parse_math2());
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (peek().type == Token::Type::Op &&
           (peek().text == "*" || peek().text == "/" || peek().text == "//" || peek().text == "%")) {
      const Token op = next();
      left = binary(op.text, op.pos, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (peek().type == Token::Type::Op && peek().text == "**") {
      const Token op = next();
      left = binary("**", op.pos, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    const Token& t = peek();
    DepthGuard guard(*this, t.pos);
    ExprPtr node;
    if (t.type == Token::Type::Op && (t.text == "-" || t.text == "+")) {
      const Token op = next();
      node = make(Expr::Kind::Unary, op.pos);
      node->name = op.text;
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token t = next();
    switch (t.type) {
      case Token::Type::Name: {
        auto e = make(Expr::Kind::Literal, t.pos);
        if (t.text == "true" || t.text == "True")
          e->value = Value::from_bool(true);
        else if (t.text == "false" || t.text == "False")
          e->value = Value::from_bool(false);
        else if (t.text == "none" || t.text == "None")
          e->value = Value::none();
        else {
          e->kind = Expr::Kind::Name;
          e->name = t.text;
        }
        return e;
      }
      case Token::Type::String: {
        std::string s = t.text;
        while (peek().type == Token::Type::String) s += next().text;  // "a" "b" → "ab"
        auto e = make(Expr::Kind::Literal, t.pos);
        e->value = Value::from_string(std::move(s));
        return e;
      }
      case Token::Type::Int: {
        auto e = make(Expr::Kind::Literal, t.pos);
        e->value = Value::from_int(t.integer);
        return e;
      }
      case Token::Type::Float: {
        auto e = make(Expr::Kind::Literal, t.pos);
        e->value = Value::from_float(t.number);
        return e;
      }
      case Token::Type::Op:
        if (t.text == "(") {
          ExprPtr inner = parse_tuple(true, true);
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          auto e = make(Expr::Kind::ListLiteral, t.pos);
          while (!accept_op("]")) {
            if (!e->children.empty()) {
              expect_op(",");
              if (accept_op("]")) break;
            }
            e->children.push_back(parse_expression(true));
          }
          return e;
        }
        if (t.text == "{") {
          auto e = make(Expr::Kind::DictLiteral, t.pos);
          while (!accept_op("}")) {
            if (!e->children.empty()) {
              expect_op(",");
              if (accept_op("}")) break;
            }
            e->children.push_back(parse_expression(true));
            expect_op(":");
            e->children.push_back(parse_expression(true));
          }
          return e;
        }
        break;
      case Token::Type::End: fail(origin_, t.pos, "unexpected end of tag: an expression was expected");
    }
    fail(origin_, t.pos, "unexpected '" + t.text + "'");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const Token& t = peek();
      if (t.type != Token::Type::Op) break;
      if (t.text == "." || t.text == "[") {
        node = parse_subscript(std::move(node));
      } else if (t.text == "(") {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      const Token& t = peek();
      if (t.type == Token::Type::Op && t.text == "|") {
        node = parse_filters(std::move(node), true);
      } else if (t.type == Token::Type::Name && t.text == "is") {
        node = parse_test(std::move(node));
      } else if (t.type == Token::Type::Op && t.text == "(") {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token t = next();
    if (t.text == ".") {
      const Token attr = next();
      if (attr.type == Token::Type::Name) {
        auto e = make(Expr::Kind::Attr, t.pos);
        e->name = attr.text;
        e->children.push_back(std::move(node));
        return e;
      }
      if (attr.type == Token::Type::Int) {
        auto e = make(Expr::Kind::Item, t.pos);
        e->children.push_back(std::move(node));
        auto key = make(Expr::Kind::Literal, attr.pos);
        key->value = Value::from_int(attr.integer);
        e->children.push_back(std::move(key));
        return e;
      }
      fail(origin_, attr.pos, "expected a name after '.'");
    }
    // '[' subscript: an index, a slice, or a tuple of them
    std::vector<ExprPtr> args;
    bool slice = false;
    ExprPtr start, stop, step;
    while (!accept_op("]")) {
      if (!args.empty() || slice) {
        expect_op(",");
        fail(origin_, t.pos, "tuple subscripts are not supported");
      }
      if (!peek_op(":")) start = parse_expression(true);
      if (accept_op(":")) {
        slice = true;
        if (!peek_op("]") && !peek_op(",") && !peek_op(":")) stop = parse_expression(true);
        if (accept_op(":") && !peek_op("]") && !peek_op(",")) step = parse_expression(true);
      } else {
        args.push_back(std::move(start));
      }
    }
    if (slice) {
      auto e = make(Expr::Kind::Slice, t.pos);
      e->children.push_back(std::move(node));
      e->children.push_back(std::move(start));
      e->children.push_back(std::move(stop));
      e->children.push_back(std::move(step));
      return e;
    }
    if (args.size() != 1) fail(origin_, t.pos, "expected an index inside [ ]");
    auto e = make(Expr::Kind::Item, t.pos);
    e->children.push_back(std::move(node));
    e->children.push_back(std::move(args[0]));
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!accept_op(")")) {
      if (!first) {
        expect_op(",");
        if (accept_op(")")) break;
      }
      first = false;
      if (peek_op("*") || peek_op("**")) fail(origin_, peek().pos, "*args and **kwargs in calls are not supported");
      if (peek().type == Token::Type::Name && peek(1).type == Token::Type::Op && peek(1).text == "=") {
        const std::string key = next().text;
        next();
        e.named.emplace_back(key, parse_expression(true));
      } else {
        if (!e.named.empty()) fail(origin_, peek().pos, "a positional argument follows a keyword argument");
        e.children.push_back(parse_expression(true));
      }
    }
  }

  ExprPtr parse_call(ExprPtr node) {
    auto e = make(Expr::Kind::Call, node->pos);
    e->children.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  // `|name(args)|name2 ...`; a {% filter %} block starts without the bar.
  ExprPtr parse_filters(ExprPtr node, bool leading_bar) {
    bool first = !leading_bar;
    while (first || accept_op("|")) {
      first = false;
      Token name = expect_name_token();
      std::string full = name.text;
      while (peek_op(".")) {
        next();
        full += "." + expect_name_token().text;
      }
      if (!known_filter(full)) fail(origin_, name.pos, "no filter named '" + full + "'");
      auto e = make(Expr::Kind::Filter, name.pos);
      e->name = full;
      e->children.push_back(std::move(node));
      if (peek_op("(")) parse_call_args(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    const Token is = next();
    const bool negated = accept_name("not");
    Token name = expect_name_token();
    std::string full = name.text;
    while (peek_op(".")) {
      next();
      full += "." + expect_name_token().text;
    }
    if (!known_test(full)) fail(origin_, name.pos, "no test named '" + full + "'");
    auto e = make(Expr::Kind::Test, is.pos);
    e->name = full;
    e->negated = negated;
    e->children.push_back(std::move(node));
    const Token& t = peek();
    if (t.type == Token::Type::Op && t.text == "(") {
      parse_call_args(*e);
    } else if ((t.type == Token::Type::Name || t.type == Token::Type::String || t.type == Token::Type::Int ||
                t.type == Token::Type::Float || (t.type == Token::Type::Op && (t.text == "[" || t.text == "{"))) &&
               !(t.type == Token::Type::Name &&
                 (t.text == "else" || t.text == "or" || t.text == "and" || t.text == "if" || t.text == "is"))) {
      if (t.type == Token::Type::Name && t.text == "is") fail(origin_, t.pos, "tests cannot be chained with is");
      e->children.push_back(parse_postfix(parse_primary()));
    }
    return e;
  }

  // ---- token helpers ----
  const Token& peek(std::size_t ahead = 0) const {
    const std::size_t i = std::min(at_ + ahead, tokens_->size() - 1);
    return (*tokens_)[i];
  }
  Token next() {
    const Token t = peek();
    if (at_ < tokens_->size() - 1) ++at_;
    return t;
  }
  bool peek_op(const char* op) const { return peek().type == Token::Type::Op && peek().text == op; }
  bool peek_name(const char* name) const { return peek().type == Token::Type::Name && peek().text == name; }
  bool accept_op(const char* op) {
    if (!peek_op(op)) return false;
    next();
    return true;
  }
  bool accept_name(const char* name) {
    if (!peek_name(name)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(origin_, peek().pos, std::string("expected '") + op + "', found " + describe(peek()));
  }
  void expect_name(const char* name) {
    if (!accept_name(name))
      fail(origin_, peek().pos, std::string("expected '") + name + "', found " + describe(peek()));
  }
  Token expect_name_token() {
    if (peek().type != Token::Type::Name) fail(origin_, peek().pos, "expected a name, found " + describe(peek()));
    return next();
  }
  void expect_end() {
    if (peek().type != Token::Type::End)
      fail(origin_, peek().pos, "expected the end of the tag, found " + describe(peek()));
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::Type::End: return "the end of the tag";
      case Token::Type::String: return "a string";
      default: return "'" + t.text + "'";
    }
  }

  std::vector<Piece> pieces_;
  const std::string& origin_;
  std::size_t index_ = 0;
  std::vector<Token>* tokens_ = nullptr;
  std::size_t at_ = 0;
  int expr_depth_ = 0;
  int block_depth_ = 0;
};

}  // namespace

Body parse_template(std::string_view source, const std::string& origin) {
  Lexer lexer(source, origin);
  Parser parser(lexer.run(), origin);
  return parser.parse_all();
}

}  // namespace lal::lm::jinja
