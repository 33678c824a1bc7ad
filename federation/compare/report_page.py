"""The jinja2 template of the comparison report's ``index.html`` (see :mod:`.report`)."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fed compare: {{ c.a.text }} vs {{ c.b.text }}</title>
<style>
 body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
 h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
 table { border-collapse: collapse; margin: 0.5em 0; }
 th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
          vertical-align: top; }
 th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
 .verdict { padding: 0.8em 1em; font-size: 1.15em; border-radius: 4px; }
 .ok { background: #e3f4e1; border: 1px solid #4c9a45; }
 .bad { background: #fbe4e1; border: 1px solid #c0392b; }
 .different { color: #c0392b; font-weight: bold; } .equivalent { color: #2c6e9b; }
 .small { font-size: 0.85em; color: #555; } img { max-width: 100%; }
 ul.reasons { margin: 0; padding-left: 1.2em; }
</style>
</head>
<body>
<h1>Comparison of {{ c.a.text }} (A) and {{ c.b.text }} (B)</h1>
<p class="verdict {{ 'ok' if c.equivalent else 'bad' }}" id="verdict">{{ c.verdict() }}</p>

<table>
<tr><th></th><th>site</th><th>run</th><th>datasets selected</th><th>records read</th></tr>
{% for label, side in [("A", c.a), ("B", c.b)] %}
<tr><th>{{ label }}</th><td>{{ side.site }}</td><td>{{ side.run }}</td>
<td class="n">{{ side.datasets }}</td>
<td>{{ "from what the site published" if side.remote else "from its registry" }}</td></tr>
{% endfor %}
</table>
<p class="small">Datasets are paired by dataset type and data ID. A pair is
<b>identical</b> when both files have the same size and xxh3-128 checksum,
<b>equivalent</b> when the bytes differ but every value agrees within the tolerance
(|A&nbsp;&minus;&nbsp;B| &le; atol + rtol&nbsp;&times;&nbsp;|B|, with {{ c.tolerance.describe() }}),
and <b>different</b> when shapes, types, structure or NaN patterns differ or values are
beyond the tolerance. Images and arrays are compared pixel by pixel (headers are not
compared), tables column by column, JSON and YAML documents structurally.
Files read: {{ c.fetched }} fetched from other sites ({{ c.fetched_bytes }} bytes),
{{ c.reused }} reused from the cache, every one verified against its record.</p>

<h2>Summary per dataset type</h2>
<table id="summary">
<tr><th>dataset type</th><th>storage class</th><th>pairs</th>
{% for k in kinds %}<th>{{ k.label }}</th>{% endfor %}<th>max |A &minus; B|</th></tr>
{% for s in c.summaries %}
<tr><td>{{ s.dataset_type }}</td><td>{{ s.storage_class }}</td><td class="n">{{ s.pairs }}</td>
{% for k in kinds %}<td class="n">{{ s.counts[k] }}</td>{% endfor %}
<td class="n">{{ s.max_abs | num }}
{%- if s.histogram.unit %} {{ s.histogram.unit }}{% endif %}</td></tr>
{% endfor %}
</table>

<h2>Distribution of differences</h2>
{% for s in c.summaries %}
<h3>{{ s.dataset_type }}</h3>
{% if s.dataset_type in histograms %}
<img src="{{ histograms[s.dataset_type] }}"
     alt="Histogram of |A - B| of the {{ what.get(s.storage_class, 'values') }}
          of {{ s.dataset_type }}">
{% elif s.histogram.zeros %}
<p>All {{ s.histogram.zeros }} compared {{ what.get(s.storage_class, 'values') }} are equal.</p>
{% else %}
<p>No values compared: every pair is identical by checksum, compared by bytes only, or
on one side only.</p>
{% endif %}
{% endfor %}

<h2>Worst pairs</h2>
{% if worst %}
<table id="worst">
<tr><th>dataset</th><th>class</th><th>values</th><th>beyond tolerance</th><th>NaN on one side</th>
<th>max |A &minus; B|</th><th>mean |A &minus; B|</th><th>max |A &minus; B| / |B|</th>
<th>why</th></tr>
{% for p in worst %}
{% set st = p.stats %}
<tr><td>{{ p.describe() }}</td><td class="{{ p.kind }}">{{ p.kind.label }}</td>
{% if st %}
<td class="n">{{ st.values }}</td>
<td class="n">{{ st.beyond }} ({{ "%.3g" % (100 * st.fraction_beyond) }}%)</td>
<td class="n">{{ st.nan_mismatch }}</td>
<td class="n">{{ st.max_abs | num }}{% if p.unit %} {{ p.unit }}{% endif %}</td>
<td class="n">{{ st.mean_abs | num }}</td><td class="n">{{ st.max_rel | num }}</td>
{% else %}<td colspan="6">(not comparable value by value)</td>{% endif %}
<td>{% if p.reasons %}<ul class="reasons">
{% for r in p.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
{%- else %}within tolerance{% endif %}</td></tr>
{% endfor %}
</table>
{% else %}
<p>No pair's bytes differ.</p>
{% endif %}

{% if image %}
<h2>Difference image of the worst image pair</h2>
<p>{{ c.worst_image.pair.describe() }}: A &minus; B (left; black where a value is NaN on
one side only) and the pixels beyond the tolerance (right).</p>
<img src="{{ image }}" alt="Difference image A - B of {{ c.worst_image.pair.describe() }}">
{% endif %}

<h2>Only on one side</h2>
{% for label, found in [("A", only_a), ("B", only_b)] %}
<p>Only in {{ label }}: {{ found | length }}{% if found %}:{% endif %}</p>
{% if found %}<ul>{% for p in found[:limit] %}<li>{{ p.describe() }}</li>{% endfor %}
{% if found | length > limit %}<li>... and {{ found | length - limit }} more</li>{% endif %}
</ul>{% endif %}
{% endfor %}

<p class="small">Made by fed compare on {{ created }}.</p>
</body>
</html>
"""
