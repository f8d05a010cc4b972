# berth's Shiny check app: a slider and a text computed from it on the
# server, so the text arrives over Shiny's websocket.
library(shiny)

ui <- fluidPage(
  titlePanel("berth shiny demo"),
  sliderInput("n", "Number", min = 1, max = 20, value = 7),
  textOutput("square")
)

server <- function(input, output, session) {
  output$square <- renderText(paste("The square of", input$n, "is", input$n * input$n))
}

shinyApp(ui, server)
