// The Jinja engine (lal/lm/jinja.hpp): each expected string is what Jinja2 3.1 renders with transformers' settings
// (trim_blocks, lstrip_blocks, sandbox, json.dumps tojson); tests/chat_templates/run_parity.py checks real templates.
#include <doctest/doctest.h>

#include <string>

#include "lal/lm/jinja.hpp"

using lal::lm::JinjaError;
using lal::lm::JinjaLimits;
using lal::lm::JinjaTemplate;
using json = nlohmann::ordered_json;

namespace {

std::string render(const std::string& source, const json& vars = json::object(), const JinjaLimits& limits = {}) {
  return JinjaTemplate(source, "t.jinja").render(vars, limits);
}

std::string error_of(const std::string& source, const json& vars = json::object(), const JinjaLimits& limits = {}) {
  try {
    render(source, vars, limits);
  } catch (const JinjaError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("jinja: whitespace control as transformers configures Jinja2") {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before a block tag goes.
  CHECK(render("{% if true %}\n  a\n  {% endif %}\nb") == "  a\nb");
  CHECK(render("x  {%- if true -%}  y  {%- endif -%}  z") == "xyz");
  CHECK(render("a\n{{ 1 }}\nb") == "a\n1\nb");  // variable tags keep their newlines
  CHECK(render("a {{- 1 -}} b") == "a1b");
  CHECK(render("  {# comment #}\nx") == "x");
  CHECK(render("{%+ if true %}x{% endif %}") == "x");
  CHECK(render("  {%+ if true %}x{% endif %}") == "  x");
  CHECK(render("{% if true +%}\nx{% endif %}") == "\nx");
  CHECK(render("line\n") == "line");  // one trailing newline is dropped (keep_trailing_newline=False)
  CHECK(render("line\n\n") == "line\n");
  CHECK(render("a\r\nb") == "a\nb");
  CHECK(render("{% raw %}{{ not evaluated }}{% endraw %}") == "{{ not evaluated }}");
  CHECK(render("{{ '}}' }}") == "}}");
  CHECK(render("{{ {'a': {'b': 1}}['a']['b'] }}") == "1");
}

TEST_CASE("jinja: statements") {
  CHECK(render("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
               {{"xs", {"a", "b", "c"}}}) == "1a,2b,3c");
  CHECK(render("{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}"
               "{{ loop.length }};{% endfor %}",
               {{"xs", {1, 2}}}) == "021True2;110False2;");
  CHECK(render("{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}", {{"xs", {1, 2, 3}}}) ==
        "2232");
  CHECK(render("{% for x in xs %}{{ x }}{% else %}empty{% endfor %}", {{"xs", json::array()}}) == "empty");
  CHECK(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"b", 1}, {"a", 2}}}}) == "b=1;a=2;");
  CHECK(render("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
               "{{ x }}{% endfor %}",
               {{"xs", {1, 2, 3, 4, 5}}}) == "13");
  CHECK(render("{% for x in xs %}{{ loop.previtem|default('-') }}{{ x }}{{ loop.nextitem|default('-') }} {% endfor %}",
               {{"xs", {1, 2}}}) == "-12 12- ");
  // Scoping: a set inside a loop does not leak; namespace attributes do.
  CHECK(render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}") == "1");
  CHECK(render("{% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}") ==
        "4");
  CHECK(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}") == "12");
  CHECK(render("{% set block %}x{{ 1 + 1 }}{% endset %}[{{ block }}]") == "[x2]");
  CHECK(render("{% if false %}a{% elif 0 %}b{% elif 'x' %}c{% else %}d{% endif %}") == "c");
  CHECK(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }}"
               "{{ greet('B', punct='?') }}") == "Hi A!Hi B?");
  CHECK(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}") == "321");
  CHECK(render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}in{% endcall %}") == "[in]");
  CHECK(render("{% filter upper %}abc{% endfilter %}") == "ABC");
  CHECK(render("a{% generation %}b{% endgeneration %}c") == "abc");
}

TEST_CASE("jinja: expressions with Python semantics") {
  CHECK(render("{{ 7 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 0.1 + 0.2 }}") ==
        "3.5 2.0 3 -4 2 1024 0.30000000000000004");
  CHECK(render("{{ 1e16 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 1 == 1.0 }} {{ true + 1 }}") == "1e+16 1.5e-07 100.0 True 2");
  CHECK(render("{{ 'ab' ~ 1 ~ none }} {{ 'x' * 3 }} {{ [1] + [2] }}") == "ab1None xxx [1, 2]");
  CHECK(render("{{ s[1:] }}|{{ s[:-1] }}|{{ s[::-1] }}|{{ s[0] }}|{{ s[-1] }}", {{"s", "日本語"}}) ==
        "本語|日本|語本日|日|語");
  CHECK(render("{{ xs[::-1] }} {{ xs[1:2] }} {{ xs[-2] }}", {{"xs", {1, 2, 3}}}) == "[3, 2, 1] [2] 2");
  CHECK(render("{{ 'a' in 'cat' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}") == "True False True");
  CHECK(render("{{ 'yes' if x else 'no' }}{{ 'y' if false }}", {{"x", 0}}) == "no");
  CHECK(render("{{ none or 'b' }} {{ 'a' and 'b' }} {{ not [] }}") == "b b True");
  CHECK(render("{{ {'a': 1, 'b': [True, None, 'x']} }}") == "{'a': 1, 'b': [True, None, 'x']}");
  CHECK(render("{{ (1, 'a') }} {{ \"it's\" }}{{ ['it\\'s'] }}") == "(1, 'a') it's[\"it's\"]");
  CHECK(render("{{ 'a' 'b' }}{{ \"\\u3042\\n\\t\" }}") == "abあ\n\t");
  CHECK(render("{{ m.missing is defined }} {{ m.role }} {{ m['role'] }} {{ m.get('x', 5) }} {{ m.get('x') }}",
               {{"m", {{"role", "user"}}}}) == "False user user 5 None");
  CHECK(render("{{ d.keys()|list }} {{ d.values()|list }} {{ d|length }}", {{"d", {{"z", 1}, {"a", 2}}}}) ==
        "['z', 'a'] [1, 2] 2");
}

TEST_CASE("jinja: string methods") {
  CHECK(
      render(
          "{{ ' \\n a b \\t'.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\na'.lstrip('\\n') }}|{{ 'a  '.rstrip() }}") ==
      "a b|a|a|a");
  CHECK(render("{{ '　全角　'.strip() }}") == "全角");  // U+3000 is whitespace to Python
  CHECK(render("{{ 'a</think>b</think>c'.split('</think>') }} {{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }}") ==
        "['a', 'b', 'c'] ['a', 'b'] ['a', 'b,c']");
  CHECK(render("{{ 'a,b,c'.rsplit(',', 1) }}") == "['a,b', 'c']");
  CHECK(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abc'.replace('b', 'B') }}") ==
        "TrueTrueaBc");
  CHECK(render("{{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'Ab'.upper() }}{{ 'Ab'.lower() }}") ==
        "Hello World Hello ABab");
  CHECK(render("{{ '{} and {name}'.format(1, name='x') }} {{ 'abcb'.find('b') }} {{ 'abcb'.count('b') }}") ==
        "1 and x 1 2");
  CHECK(render("{{ '-'.join(['a', 'b']) }}") == "a-b");
}

TEST_CASE("jinja: filters and tests") {
  const json tools = json::parse(R"([{"name": "f", "x": {"é": 1.5, "b": [true, null]}}])");
  CHECK(render("{{ tools[0]|tojson }}", {{"tools", tools}}) == R"({"name": "f", "x": {"é": 1.5, "b": [true, null]}})");
  CHECK(render("{{ tools[0].x|tojson(indent=2) }}", {{"tools", tools}}) ==
        "{\n  \"é\": 1.5,\n  \"b\": [\n    true,\n    null\n  ]\n}");
  CHECK(render("{{ '<\"\\n'|tojson }} {{ {}|tojson(indent=4) }} {{ [1,2]|tojson(separators=(',', ':')) }}") ==
        "\"<\\\"\\n\" {} [1,2]");
  CHECK(render("{{ x|default('d') }}{{ ''|default('e', true) }}{{ ''|default('f') }}{{ none|default('g') }}") ==
        "deNone");
  CHECK(render("{{ '  a '|trim }}|{{ [1, 2, 3]|length }}|{{ 'ab'|count }}|{{ [3, 1]|join(', ') }}") == "a|3|2|3, 1");
  const json msgs =
      json::parse(R"([{"role": "user", "c": 1}, {"role": "assistant", "c": 2}, {"role": "user", "c": 3}])");
  CHECK(render("{{ m|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }}", {{"m", msgs}}) == "[1, 3]");
  CHECK(render("{{ m|rejectattr('role', 'eq', 'user')|list|length }}", {{"m", msgs}}) == "1");
  CHECK(
      render("{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 0, 2]|select|list }} {{ ['a', 'b']|map('upper')|list }}") ==
      "[1, 3] [1, 2] ['A', 'B']");
  CHECK(render("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a']|unique|list }} {{ [3, 1]|first }}{{ [3, 1]|last }}") ==
        "[1, 2, 3] ['b', 'A'] 31");
  CHECK(render("{{ '12'|int + 1 }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }} {{ 5|string }}{{ [1]|string }}") ==
        "13 0 3 2.5 5[1]");
  CHECK(render("{{ {'b': 1, 'a': 2}|dictsort }} {{ {'a': 1}|items|list }}") == "[('a', 2), ('b', 1)] [('a', 1)]");
  CHECK(render("{{ 'hello world'|title }} {{ 'hi'|capitalize }} {{ '<a>'|e }} {{ 'x'|safe }}") ==
        "Hello World Hi &lt;a&gt; x");
  CHECK(render("{{ x is defined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}{{ [] is iterable }}"
               "{{ 1 is number }}{{ true is true }}{{ false is false }}{{ 0 is false }}{{ 3 is odd }}"
               "{{ 4 is divisibleby 2 }}{{ 'a' is in 'abc' }}{{ 1 is not string }}") ==
        "FalseTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrue");
}

TEST_CASE("jinja: globals") {
  CHECK(render("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ dict(a=1) }}") == "[0, 1, 2] [1, 3, 5] {'a': 1}");
  CHECK(render("{{ strftime_now('%Y')|length }}") == "4");
  CHECK(error_of("{{ raise_exception('Roles must alternate') }}") ==
        "t.jinja:1:4: the chat template raised an exception: Roles must alternate");
}

TEST_CASE("jinja: errors name the template, line and column") {
  CHECK(error_of("a\n{% if x %}") == "t.jinja:2:1: block opened here is never closed (expected {% endif %})");
  CHECK(error_of("{{ x | nosuchfilter }}") == "t.jinja:1:8: no filter named 'nosuchfilter'");
  CHECK(error_of("{{ x is nosuchtest }}") == "t.jinja:1:9: no test named 'nosuchtest'");
  CHECK(error_of("{% include 'x' %}").find("unsupported statement {% include %}") != std::string::npos);
  CHECK(error_of("{% endfor %}").find("unexpected {% endfor %}") != std::string::npos);
  CHECK(error_of("{{ 'abc }}").find("never closed") != std::string::npos);
  // Undefined values may be printed and tested, but not used further (Jinja2's default Undefined).
  CHECK(render("[{{ missing }}]{{ missing|length }}{{ missing is defined }}") == "[]0False");
  CHECK(error_of("{{ missing.attr }}") == "t.jinja:1:11: 'missing' is undefined");
  CHECK(error_of("{{ missing + 1 }}") == "t.jinja:1:12: 'missing' is undefined");
  CHECK(error_of("{{ m.x.y }}", {{"m", json::object()}}) == "t.jinja:1:7: 'dict object' has no attribute 'x'");
  CHECK(error_of("{{ 'a' + 1 }}") == "t.jinja:1:8: unsupported operand type(s) for +: 'str' and 'int'");
  CHECK(error_of("{% for x in none %}{% endfor %}") == "t.jinja:1:13: 'NoneType' object is not iterable");
  CHECK(error_of("{{ xs.append(1) }}", {{"xs", json::array()}}).find("unsafe") != std::string::npos);
  CHECK(error_of("{{ x|tojson }}").find("not JSON serializable") != std::string::npos);
}

TEST_CASE("jinja: bounds on output, loops and recursion") {
  JinjaLimits small;
  small.max_output_bytes = 100;
  CHECK(error_of("{% for i in range(50) %}abc{% endfor %}", json::object(), small).find("exceeds 100 bytes") !=
        std::string::npos);
  small = {};
  small.max_loop_iterations = 10;
  CHECK(error_of("{% for i in range(5) %}{% for j in range(5) %}{% endfor %}{% endfor %}", json::object(), small)
            .find("more than 10 loop iterations") != std::string::npos);
  CHECK(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nests deeper than 200 calls") !=
        std::string::npos);
  CHECK(error_of("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}").find("nested too deeply") !=
        std::string::npos);
  CHECK(error_of("{{ 'x' * 100000000000 }}").find("too large") != std::string::npos);
}
