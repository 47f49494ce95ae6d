"""A small in-car SLU data set generated from the project's own templates (for ``tinydistill quickstart``).

Intents and slot types follow NLPCC 2018 task 4 (music / navigation / phone calls / other), and the
files use the NLPCC raw corpus format, so the real ``nlpcc2018_slu`` task reads them unchanged::

    <session id>\\t<utterance>\\t<intent>\\t<utterance with <slot>value</slot> marks>
    (a blank line between sessions)

plus ``intent_label.txt`` / ``slot_label.txt`` with the 11 intents and 32 BIO tags of the official
label files.  Everything is deterministic under ``seed``.  The utterances are synthetic: they exercise the
pipeline, they say nothing about accuracy on the real corpus.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from tinydistill.distill.fsutil import atomic_write_text

INTENTS = ("OTHERS", "music.play", "music.pause", "music.prev", "music.next", "navigation.navigation",
           "navigation.open", "navigation.start_navigation", "navigation.cancel_navigation",
           "phone_call.make_a_phone_call", "phone_call.cancel")
SLOT_TYPES = ("song", "singer", "theme", "style", "age", "toplist", "emotion", "language", "instrument", "scene",
              "destination", "custom_destination", "origin", "phone_num", "contact_name")
SLOT_TAGS = ("PAD", "O") + tuple(f"{p}-{s}" for s in SLOT_TYPES for p in ("B", "I"))

VALUES = {
    "singer": ["刘德华", "周杰伦", "王菲", "张学友", "邓紫棋", "陈奕迅", "林俊杰", "蔡依林", "周华健", "孙燕姿",
               "李宗盛", "莫文蔚", "五月天", "汪峰", "朴树"],
    "song": ["忘情水", "青花瓷", "红豆", "吻别", "泡沫", "十年", "江南", "稻香", "花心", "遇见", "后来",
             "平凡之路", "夜曲", "童年", "朋友", "海阔天空", "小幸运", "光年之外"],
    "style": ["摇滚", "民谣", "爵士", "流行", "古典", "说唱"],
    "language": ["粤语", "英文", "日语", "韩语", "国语"],
    "age": ["八零后", "九零后", "七十年代", "经典老"],
    "toplist": ["热歌榜", "新歌榜", "抖音热榜"],
    "emotion": ["伤感", "欢快", "安静", "励志"],
    "theme": ["dj", "儿歌", "车载", "网络"],
    "instrument": ["钢琴", "吉他", "古筝"],
    "scene": ["开车", "睡前", "运动"],
    "destination": ["北京西站", "天安门", "人民广场", "首都机场", "西湖", "万达广场", "中山公园", "火车站",
                    "市政府", "第一人民医院", "南京路步行街", "浦东机场", "春熙路", "解放碑", "世纪公园",
                    "汽车配件城", "科技园", "大学城"],
    "custom_destination": ["家", "公司", "单位", "学校"],
    "origin": ["公司", "家里", "这里", "火车站", "机场"],
    "contact_name": ["张三", "李四", "王五", "妈妈", "爸爸", "老婆", "小明", "刘老师", "王经理", "陈师傅",
                     "赵总", "小李"],
}

# intent -> (weight, templates); {slot} marks a slot filled from VALUES
TEMPLATES = {
    "music.play": (30, [
        "播放{singer}的{song}", "来一首{song}", "我想听{singer}的歌", "放一首{style}音乐", "播放{song}",
        "来点{language}歌曲", "给我来一首{singer}的{song}", "我要听{song}", "放{singer}的歌", "播放{toplist}",
        "来一首{emotion}的歌", "播放{age}歌曲", "听一下{instrument}曲", "来点{scene}听的歌", "播放{theme}歌曲",
        "随便放首歌", "放首歌听听", "播放音乐"]),
    "music.pause": (4, ["暂停", "暂停播放", "别放了", "停一下音乐", "音乐暂停", "先停一下"]),
    "music.next": (4, ["下一首", "换一首", "切歌", "播放下一首", "换首歌"]),
    "music.prev": (2, ["上一首", "播放上一首", "回到上一首歌"]),
    "navigation.navigation": (20, [
        "导航到{destination}", "去{destination}", "我要去{destination}", "从{origin}到{destination}",
        "带我回{custom_destination}", "导航去{destination}", "到{destination}怎么走", "回{custom_destination}",
        "帮我导航到{destination}", "{destination}"]),
    "navigation.open": (3, ["打开导航", "导航", "打开地图", "开启导航"]),
    "navigation.start_navigation": (2, ["开始导航", "出发", "开始吧"]),
    "navigation.cancel_navigation": (5, ["取消导航", "退出导航", "不导航了", "关闭导航", "取消"]),
    "phone_call.make_a_phone_call": (15, [
        "打电话给{contact_name}", "给{contact_name}打个电话", "拨打{phone_num}", "呼叫{contact_name}",
        "打给{contact_name}", "拨打电话{phone_num}", "给{contact_name}打电话", "打电话"]),
    "phone_call.cancel": (2, ["取消拨打", "不打了", "挂断电话", "别打了"]),
    "OTHERS": (18, [
        "今天天气怎么样", "你好", "讲个笑话", "现在几点了", "空调温度调高一点", "打开车窗", "明天会下雨吗",
        "你叫什么名字", "谢谢", "好的", "我饿了", "附近有什么好吃的", "声音大一点", "关闭空调", "没事",
        "你真聪明", "今天星期几", "查一下限行"]),
}


def _phone(rng: random.Random) -> str:
    return "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))


def utterance(intent: str, rng: random.Random) -> tuple[str, str]:
    """One ``(plain text, slot-annotated text)`` pair of ``intent``."""
    template = rng.choice(TEMPLATES[intent][1])
    plain, marked = [], []
    for part in re.split(r"(\{\w+\})", template):
        if part.startswith("{"):
            slot = part[1:-1]
            value = _phone(rng) if slot == "phone_num" else rng.choice(VALUES[slot])
            plain.append(value)
            marked.append(f"<{slot}>{value}</{slot}>")
        elif part:
            plain.append(part)
            marked.append(part)
    return "".join(plain), "".join(marked)


def generate(n: int = 400, seed: int = 0) -> list[list[tuple[str, str, str, str]]]:
    """``n`` utterances in sessions of 1-5: lists of ``(session id, text, intent, annotated text)``."""
    rng = random.Random(seed)
    intents = list(TEMPLATES)
    weights = [TEMPLATES[i][0] for i in intents]
    sessions, count = [], 0
    while count < n:
        sid = str(rng.randrange(10**8, 10**9))
        size = min(rng.randint(1, 5), n - count)
        rows = []
        for _ in range(size):
            intent = rng.choices(intents, weights)[0]
            text, marked = utterance(intent, rng)
            rows.append((sid, text, intent, marked))
        sessions.append(rows)
        count += size
    return sessions


CORPUS_FILE = "corpus.train.txt"


def write_corpus(out_dir: str | Path, n: int = 400, seed: int = 0) -> Path:
    """Write the generated corpus and the label files into ``out_dir``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    sessions = generate(n, seed)
    text = "\n".join("".join("\t".join(r) + "\n" for r in s) for s in sessions)
    atomic_write_text(out_dir / CORPUS_FILE, text)
    atomic_write_text(out_dir / "intent_label.txt", "".join(i + "\n" for i in INTENTS))
    atomic_write_text(out_dir / "slot_label.txt", "".join(t + "\n" for t in SLOT_TAGS))
    return out_dir
