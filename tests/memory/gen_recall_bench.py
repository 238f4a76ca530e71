#!/usr/bin/env python3
"""Generate the recall benchmark of `lal bench recall`: multi-session conversations in Japanese and English, with
questions whose evidence turns are known.

    python3 tests/memory/gen_recall_bench.py OUT.jsonl [--conversations 200] [--seed 1]

One JSON object per line, one line per conversation:
    {"conversation": "ja-003", "lang": "ja",
     "turns": [{"id": 0, "session": 0, "time_ns": ..., "user": "...", "answer": "..."}, ...],
     "questions": [{"type": "temporal", "text": "...", "time_ns": ..., "evidence": [turn ids]}, ...]}

What a conversation holds (a person talking to the assistant over 12–16 sessions, 2–5 days apart, 7–11 turns each):
  * facts told once, in passing, among small talk: name, job, residence, favourite food, hobby, a relative's name
    and, sessions later, where that relative works; the residence changes halfway (a move);
  * in every session, one or two turns about what the person did that day, from one shared pool of activities
    (so that the words of an activity say nothing about *when*), and filler turns (weather, opinions, other
    people's food and places — lexical distractors);
Question types (asked one day after the last session, in this order, so that earlier recalls rehearse):
  single_hop        a fact told once (job, favourite food, hobby, name), asked in other words
  knowledge_update  where the person lives now (evidence: the move, not the old address)
  temporal          what they did N days ago / last time we talked (evidence: that session's activity turns)
  multi_hop         where the relative works (evidence: the turn naming the relative and the turn about the work)
Deterministic for a seed. Nothing here is tuned to lal: the baseline and lal see the same turns and questions.
"""
import argparse
import json
import random

DAY = 86400 * 10**9
START = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z

JA = {
    "names": ["太郎", "花子", "健太", "美咲", "翔太", "陽菜", "大輔", "結衣", "拓也", "さくら", "直樹", "彩"],
    "cities": ["東京", "大阪", "京都", "名古屋", "福岡", "札幌", "仙台", "神戸", "横浜", "広島", "金沢", "那覇"],
    "jobs": ["エンジニア", "看護師", "小学校の先生", "デザイナー", "料理人", "会計士", "薬剤師", "記者"],
    "foods": ["カレー", "ラーメン", "寿司", "天ぷら", "うどん", "焼き肉", "お好み焼き", "餃子"],
    "hobbies": ["釣り", "登山", "写真", "ギター", "将棋", "陶芸", "ヨガ", "盆栽"],
    "relations": ["妹", "兄", "姉", "弟", "母", "父", "親友"],
    "rel_names": ["花子", "恵子", "誠", "優子", "剛", "真理", "学", "舞"],
    "workplaces": ["パン屋", "病院", "銀行", "図書館", "郵便局", "花屋", "市役所", "動物病院"],
    "activities": ["美術館に行きました", "映画館で映画を見ました", "公園を散歩しました", "ジムで運動しました",
                   "友達と買い物に行きました", "部屋の大掃除をしました", "パンを焼きました", "カラオケに行きました",
                   "温泉に行きました", "水族館に行きました", "図書館で本を借りました", "自転車で川沿いを走りました",
                   "動物園に行きました", "ボウリングをしました", "プールで泳ぎました", "海に行きました",
                   "陶芸教室の見学をしました", "古本屋を回りました", "博物館に行きました", "庭の手入れをしました"],
    "fillers": ["今日はいい天気ですね。", "最近ちょっと寒くなってきました。", "雨が続いていて洗濯物が乾きません。",
                "ニュースで新しい駅ができると聞きました。", "同僚がラーメン屋を開いたそうです。",
                "友達は京都に住んでいて、よく遊びに行きます。", "週末は家でゆっくりしたいです。",
                "コーヒーを飲みすぎたかもしれません。", "最近読んだ小説が面白かったです。",
                "隣の人が寿司を作るのが上手らしいです。", "電車が遅れて大変でした。",
                "新しいスマホに替えようか迷っています。", "夕飯は何にしようかな。", "ありがとうございます。",
                "なるほど、そういうことですね。", "少し眠いです。", "来年は旅行に行きたいなと思っています。",
                "会社の近くに新しいカフェができました。", "サッカーの試合を見ていました。", "桜がきれいでした。"],
    "answers": ["そうなんですね。", "いいですね！", "それは大変でしたね。", "教えてくれてありがとうございます。",
                "覚えておきます。", "なるほど。", "楽しそうですね。"],
}
EN = {
    "names": ["Alex", "Maria", "John", "Emily", "Daniel", "Sofia", "Kevin", "Laura", "Brian", "Nina", "Oscar", "Grace"],
    "cities": ["Seattle", "Boston", "Denver", "Austin", "Chicago", "Portland", "Phoenix", "Atlanta", "Miami",
               "Dallas", "Houston", "Detroit"],
    "jobs": ["software engineer", "nurse", "school teacher", "graphic designer", "chef", "accountant", "pharmacist",
             "journalist"],
    "foods": ["curry", "ramen", "sushi", "pizza", "tacos", "lasagna", "dumplings", "pho"],
    "hobbies": ["fishing", "hiking", "photography", "guitar", "chess", "pottery", "yoga", "birdwatching"],
    "relations": ["sister", "brother", "mother", "father", "cousin", "best friend"],
    "rel_names": ["Hannah", "Greg", "Paula", "Victor", "Irene", "Marcus", "Tessa", "Leo"],
    "workplaces": ["bakery", "hospital", "bank", "library", "post office", "flower shop", "city hall", "vet clinic"],
    "activities": ["went to the art museum", "watched a movie at the cinema", "took a walk in the park",
                   "worked out at the gym", "went shopping with friends", "deep-cleaned my apartment",
                   "baked some bread", "went to karaoke", "visited a hot spring", "went to the aquarium",
                   "borrowed books from the library", "rode my bike along the river", "went to the zoo",
                   "went bowling", "swam at the pool", "went to the beach", "tried a pottery class",
                   "browsed used bookstores", "visited the history museum", "worked in the garden"],
    "fillers": ["The weather is really nice today.", "It has been getting colder lately.",
                "It keeps raining and my laundry won't dry.", "I heard on the news they are building a new station.",
                "A coworker of mine opened a ramen shop.", "A friend lives in Chicago and I visit sometimes.",
                "I just want to relax at home this weekend.", "I think I drank too much coffee.",
                "The novel I read recently was great.", "My neighbor is apparently great at making sushi.",
                "The train was delayed and it was a mess.", "I'm thinking about getting a new phone.",
                "Not sure what to make for dinner.", "Thanks a lot.", "I see, that makes sense.",
                "I'm a bit sleepy.", "Maybe I'll travel somewhere next year.",
                "A new cafe opened near the office.", "I was watching a soccer match.",
                "The cherry blossoms were beautiful."],
    "answers": ["I see.", "That sounds great!", "That must have been tough.", "Thanks for telling me.",
                "I'll keep that in mind.", "Got it.", "Sounds fun."],
}


def conversation(rng, lang, idx):
    L = JA if lang == "ja" else EN
    name, job, food, hobby = (rng.choice(L[k]) for k in ("names", "jobs", "foods", "hobbies"))
    city1, city2 = rng.sample(L["cities"], 2)
    relation, rel_name, workplace = rng.choice(L["relations"]), rng.choice(L["rel_names"]), rng.choice(L["workplaces"])
    if lang == "ja":
        facts = {
            "name": f"はじめまして。{name}といいます。",
            "residence": f"{city1}に住んでいます。",
            "job": f"仕事は{job}をしています。",
            "food": f"好きな食べ物は{food}です。",
            "hobby": f"休みの日はよく{hobby}をしています。",
            "relation": f"{relation}の名前は{rel_name}です。",
            "work": f"{rel_name}は最近{workplace}で働き始めました。",
            "move": f"先週{city2}に引っ越しました。",
        }
        activity = lambda a: rng.choice(["今日は", "さっき", "今日は久しぶりに"]) + a + "。"
    else:
        facts = {
            "name": f"Nice to meet you, I'm {name}.",
            "residence": f"I live in {city1}.",
            "job": f"I work as a {job}.",
            "food": f"My favorite food is {food}.",
            "hobby": f"On my days off I usually do {hobby}.",
            "relation": f"My {relation}'s name is {rel_name}.",
            "work": f"{rel_name} recently started working at a {workplace}.",
            "move": f"I moved to {city2} last week.",
        }
        activity = lambda a: rng.choice(["Today I ", "Earlier today I ", "This afternoon I "]) + a + "."
    n_sessions = rng.randint(12, 16)
    schedule = {0: ["name", "residence"], 1: ["job"], 2: ["food"], 3: ["relation"], 4: ["hobby"],
                n_sessions // 2 + 1: ["work"], n_sessions // 2 + 3: ["move"]}
    turns, fact_turn, activity_turns, session_times = [], {}, {}, []
    t = START + rng.randint(0, 60) * DAY + rng.randint(8, 20) * 3600 * 10**9
    for s in range(n_sessions):
        if s:
            t += rng.randint(2, 5) * DAY + rng.randint(-3, 3) * 3600 * 10**9
        session_times.append(t)
        items = [("filler", rng.choice(L["fillers"])) for _ in range(rng.randint(4, 7))]
        for f in schedule.get(s, []):
            items.insert(rng.randint(1, len(items)), (f, facts[f]))
        for _ in range(rng.randint(1, 2)):
            items.insert(rng.randint(0, len(items)), ("activity", activity(rng.choice(L["activities"]))))
        clock = t
        for kind, text in items:
            clock += rng.randint(30, 180) * 10**9
            tid = len(turns)
            turns.append({"id": tid, "session": s, "time_ns": clock, "user": text, "answer": rng.choice(L["answers"])})
            if kind == "activity":
                activity_turns.setdefault(s, []).append(tid)
            elif kind != "filler":
                fact_turn[kind] = tid
    now = turns[-1]["time_ns"] + DAY
    qs = []

    def q(kind, text, evidence):
        qs.append({"type": kind, "text": text, "time_ns": now, "evidence": evidence})

    if lang == "ja":
        q("single_hop", "私の仕事は何だったか覚えていますか？", [fact_turn["job"]])
        q("single_hop", "私の好物って何でしたっけ？", [fact_turn["food"]])
        q("single_hop", "私の趣味は何だと思いますか？", [fact_turn["hobby"]])
        q("single_hop", "私の名前を覚えていますか？", [fact_turn["name"]])
        q("knowledge_update", "私は今どこに住んでいますか？", [fact_turn["move"]])
        q("multi_hop", f"私の{relation}はどこで働いていますか？", [fact_turn["relation"], fact_turn["work"]])
    else:
        q("single_hop", "Do you remember what I do for a living?", [fact_turn["job"]])
        q("single_hop", "What food do I like the most?", [fact_turn["food"]])
        q("single_hop", "What do I like doing in my free time?", [fact_turn["hobby"]])
        q("single_hop", "Do you remember my name?", [fact_turn["name"]])
        q("knowledge_update", "Which city do I live in now?", [fact_turn["move"]])
        q("multi_hop", f"Where does my {relation} work?", [fact_turn["relation"], fact_turn["work"]])
    for s in rng.sample(range(n_sessions - 1), 3):
        days = round((now - session_times[s]) / DAY)
        text = f"{days}日前に何をしましたか？" if lang == "ja" else f"What did I do {days} days ago?"
        q("temporal", text, activity_turns[s])
    last = n_sessions - 1
    q("temporal", "前回話したとき、私は何をしていましたか？" if lang == "ja" else "What had I done the last time we talked?",
      activity_turns[last])
    rng.shuffle(qs)
    return {"conversation": f"{lang}-{idx:03d}", "lang": lang, "turns": turns, "questions": qs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(a.conversations):
            lang = "ja" if i % 2 == 0 else "en"
            f.write(json.dumps(conversation(rng, lang, i // 2), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
