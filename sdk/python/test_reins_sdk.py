"""Native unit tests of the SDK's pure helpers (no component needed):
python3 -m unittest discover -s sdk/python"""

import unittest

import reins_sdk as reins


class PointerTests(unittest.TestCase):
    def test_escape_and_join(self):
        self.assertEqual(reins.join("items", 0, "a/b", "m~n"), "/items/0/a~1b/m~0n")
        self.assertEqual(reins.split("/a~1b/m~0n"), ["a/b", "m~n"])
        self.assertEqual(reins.split(""), [])
        with self.assertRaises(reins.Refuse):
            reins.split("items")

    def test_resolve_and_matches(self):
        doc = {"items": [{"price": 1}, {"price": 2}, {"name": "x"}], "a/b": True}
        self.assertEqual(reins.resolve(doc, "/items/1/price"), 2)
        self.assertIsNone(reins.resolve(doc, "/items/01/price"))
        self.assertIsNone(reins.resolve(doc, "/items/9"))
        self.assertEqual(reins.resolve(doc, "/a~1b"), True)
        self.assertEqual(reins.matches(doc, "/items/*/price"), [("/items/0/price", 1), ("/items/1/price", 2)])

    def test_strings_in_document_order(self):
        doc = {"a": "x", "b": [1, "y", {"c/d": "z"}]}
        self.assertEqual(list(reins.strings(doc)), [("/a", "x"), ("/b/1", "y"), ("/b/2/c~1d", "z")])


class SetupTests(unittest.TestCase):
    def test_built_once_per_config_and_reused(self):
        built = []

        def build(config):
            built.append(config)
            return config.get("max", 0) * 2

        setup = reins.Setup(build)
        setup.init('{"max": 3}')
        self.assertTrue(setup.ready_for('{"max": 3}'))
        ctx = reins.Context(config={"max": 3}, config_text='{"max": 3}')
        self.assertEqual(setup.get(ctx), 6)
        self.assertEqual(setup.get(ctx), 6)
        self.assertEqual(len(built), 1)
        other = reins.Context(config={"max": 4}, config_text='{"max": 4}')
        self.assertEqual(setup.get(other), 8)
        self.assertEqual(len(built), 2)

    def test_lazy_without_init_and_errors_refuse(self):
        setup = reins.Setup(lambda config: config["max"])
        self.assertEqual(setup.get(reins.Context(config={"max": 1})), 1)
        with self.assertRaises(reins.Refuse):
            setup.init("[1, 2]")


class ResultTests(unittest.TestCase):
    def test_violations(self):
        v = reins.error("/x", "range", "too big")
        self.assertTrue(v.is_error())
        self.assertEqual(reins.info("", "note", "m").severity, "info")
        with self.assertRaises(reins.Refuse):
            reins.error("x", "c", "path is not a pointer")
        with self.assertRaises(reins.Refuse):
            reins.violation("fatal", "", "c", "m")

    def test_verdict_fix_can_be_null(self):
        self.assertFalse(reins.Verdict([]).has_fix())
        self.assertTrue(reins.Verdict([], fixed=None).has_fix())

    def test_gate_decisions_and_tools(self):
        self.assertEqual(reins.rewrite({"a": 1}), ("rewrite", '{"a":1}'))
        self.assertEqual(reins.deny("no")[0], "deny")
        self.assertEqual(reins.tool("t", "d", {"type": "object"}, "write")[4], "write")
        with self.assertRaises(reins.Refuse):
            reins.tool("t", "d", None, "delete")


class ContextTests(unittest.TestCase):
    def test_setting_names_the_key(self):
        ctx = reins.Context(config={"max": "3", "n": 2, "flag": True})
        self.assertEqual(ctx.setting("n", 0, float), 2)
        self.assertEqual(ctx.setting("missing", 7, int), 7)
        with self.assertRaises(reins.Refuse) as e:
            ctx.setting("max", 0, int)
        self.assertIn("config.max", str(e.exception))
        with self.assertRaises(reins.Refuse):
            ctx.setting("flag", 0, int)  # a boolean is not a number to a config author

    def test_meta_and_describe(self):
        ctx = reins.Context(metadata={"tenant": 42, "ok": True, "obj": {}})
        self.assertEqual(ctx.meta("tenant"), "42")
        self.assertEqual(ctx.meta("ok"), "true")
        self.assertIsNone(ctx.meta("obj"))
        self.assertEqual(reins.describe_value("$5"), 'the string "$5"')
        self.assertEqual(reins.describe_value([1]), "an array of 1 item")

    def test_host_imports_work_natively(self):
        self.assertEqual(reins.counter_add("k", 2), 2)
        self.assertEqual(reins.counter_add("k", 3), 5)

    def test_context_imports_work_natively(self):
        self.assertEqual(reins.count_tokens(""), 0)
        self.assertEqual(reins.count_tokens("abcde"), 2)
        self.assertEqual(reins.context_chunks(), [])
        reins.set_context_chunks([{"id": "a.md#1", "source": "a.md", "score": 0.9, "kept": True}])
        self.assertEqual(reins.context_chunks()[0]["id"], "a.md#1")
        reins.set_context_chunks([])
        reins.explain_drop("b.md#2", "over budget: needs 9 tokens, 2 left")
        self.assertEqual(reins.take_explained_drops(), [("b.md#2", "over budget: needs 9 tokens, 2 left")])
        self.assertEqual(reins.take_explained_drops(), [])


if __name__ == "__main__":
    unittest.main()
