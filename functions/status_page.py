"""The status page: GET /api/status (HTML) and the report diagrams it shows.

Cold start: only azure.functions and shared.foundation at module level.
"""

from __future__ import annotations

import azure.functions as func

from shared.foundation.http import respond

bp = func.Blueprint()


@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops import status_page as page

    # The page's images are routes too: they carry the key the page was opened with.
    return respond(page.page_reply(req.params.get("code")))


@bp.route(route="status/reports/{run_id}/{artifact}", methods=["GET"],
          auth_level=func.AuthLevel.FUNCTION)
def status_diagram(req: func.HttpRequest) -> func.HttpResponse:
    from shared.ops import status_page as page

    return respond(page.diagram_reply(req.route_params.get("run_id", ""),
                                      req.route_params.get("artifact", "")))
