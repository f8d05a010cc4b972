"""berth's Dash check app: a title and a callback from an input to a text.

No url_base_pathname / requests_pathname_prefix / routes_pathname_prefix
here on purpose: Dash then takes them from DASH_* environment variables.
"""

from dash import Dash, Input, Output, dcc, html

app = Dash(__name__, title="berth dash demo")
server = app.server

app.layout = html.Div(
    [
        html.H1("berth dash demo"),
        dcc.Input(id="name", type="text", value="world"),
        html.P(id="greeting"),
    ]
)


@app.callback(Output("greeting", "children"), Input("name", "value"))
def greet(name):
    """Echoes the input, so a browser sees the callback round trip."""
    return f"Hello, {name}!"
